//! What setVModel does, given the vmodel and its target as they are now: refuse (and why),
//! change nothing, create the vmodel, switch it to the target at once, or start a transition
//! that switches once the target is loaded. Pure: upstream's rules (`VModelManager`), one
//! table of cases in the tests.

use crate::registry::records::VModelRecord;

/// The request, as far as the decision goes.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// `targetModelId`.
    pub target: &'a str,
    /// `expectedTargetModelId` (empty: none).
    pub expected_target: &'a str,
    /// The owner the request acts as (its own, else the default owner).
    pub owner: &'a str,
    /// `updateOnly`: the vmodel must exist.
    pub update_only: bool,
    /// `force`: switch at once even while the active model serves.
    pub force: bool,
    /// Whether the request carries `modelInfo` (then an absent target is created).
    pub has_model_info: bool,
}

/// The target model as the store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// Not registered.
    Absent,
    /// Registered, and matching the request's `modelInfo` if it has one.
    Matches,
    /// Registered with another type, path or key than the request's `modelInfo`.
    Differs,
}

/// What is known of the models in use.
#[derive(Debug, Clone, Copy)]
pub struct Now<'a> {
    /// The vmodel, if it exists.
    pub vmodel: Option<&'a VModelRecord>,
    /// The target model.
    pub target: TargetState,
    /// Whether any pod holds (or is loading) a copy of the vmodel's active model.
    pub active_held: bool,
    /// Whether the target is loaded here.
    pub target_loaded: bool,
}

/// Why setVModel is refused, each with upstream's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// FAILED_PRECONDITION: the vmodel's target is not `expectedTargetModelId`.
    ExpectedTargetMismatch,
    /// NOT_FOUND: no target model and no `modelInfo` to create it.
    TargetNotFound,
    /// ALREADY_EXISTS: the target exists with other attributes.
    TargetDiffers,
    /// ALREADY_EXISTS: the vmodel belongs to this owner.
    OwnerMismatch(String),
    /// NOT_FOUND: `updateOnly` and no such vmodel.
    VModelNotFound,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refused.
    Refuse(Refusal),
    /// Already pointing at the target: nothing to write.
    Unchanged,
    /// A new vmodel whose active model is the target.
    Create,
    /// Active := target now (the old active model loses its reference). `release_pending`: a
    /// previous pending target (not the active model) loses its reference too.
    SwitchNow { release_pending: bool },
    /// Target := target, active stays until the target has loaded.
    Transition { release_pending: bool },
}

/// Decides setVModel.
pub fn decide(ask: &Ask<'_>, now: &Now<'_>) -> Decision {
    if !ask.expected_target.is_empty() {
        let ok = match now.vmodel {
            Some(v) => v.target == ask.expected_target || v.target == ask.target,
            None => ask.expected_target == ask.target,
        };
        if !ok {
            return Decision::Refuse(Refusal::ExpectedTargetMismatch);
        }
    }
    match (now.target, ask.has_model_info) {
        (TargetState::Absent, false) => return Decision::Refuse(Refusal::TargetNotFound),
        (TargetState::Differs, true) => return Decision::Refuse(Refusal::TargetDiffers),
        _ => {}
    }
    let Some(v) = now.vmodel else {
        return if ask.update_only {
            Decision::Refuse(Refusal::VModelNotFound)
        } else {
            Decision::Create
        };
    };
    // Re-pointing needs the owner (upstream let a request without one re-point anyone's).
    if v.owner != ask.owner {
        return Decision::Refuse(Refusal::OwnerMismatch(v.owner.clone()));
    }
    if v.target == ask.target {
        return Decision::Unchanged;
    }
    let release_pending = v.in_transition() && v.target != v.active;
    let switch_now = ask.force || ask.target == v.active || !now.active_held || now.target_loaded;
    if switch_now {
        Decision::SwitchNow { release_pending }
    } else {
        Decision::Transition { release_pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(owner: &str, active: &str, target: &str) -> VModelRecord {
        VModelRecord {
            owner: owner.into(),
            active: active.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    fn ask(target: &'static str) -> Ask<'static> {
        Ask {
            target,
            expected_target: "",
            owner: "ksp",
            update_only: false,
            force: false,
            has_model_info: true,
        }
    }

    #[test]
    fn every_upstream_case() {
        let steady = vm("ksp", "m1", "m1");
        let moving = vm("ksp", "m1", "m2");
        let theirs = vm("isvc", "m1", "m1");
        let now = |vmodel, target, active_held, target_loaded| Now {
            vmodel,
            target,
            active_held,
            target_loaded,
        };
        use Decision::*;
        use TargetState::*;
        let cases: Vec<(&str, Ask<'_>, Now<'_>, Decision)> = vec![
            (
                "new vmodel",
                ask("m1"),
                now(None, Absent, false, false),
                Create,
            ),
            (
                "new vmodel, existing target",
                ask("m1"),
                now(None, Matches, false, false),
                Create,
            ),
            (
                "same target",
                ask("m1"),
                now(Some(&steady), Matches, true, true),
                Unchanged,
            ),
            (
                "same target while in transition",
                ask("m2"),
                now(Some(&moving), Matches, true, false),
                Unchanged,
            ),
            (
                "switch now: the active model is held nowhere",
                ask("m2"),
                now(Some(&steady), Absent, false, false),
                SwitchNow {
                    release_pending: false,
                },
            ),
            (
                "switch now: the target is already loaded",
                ask("m2"),
                now(Some(&steady), Matches, true, true),
                SwitchNow {
                    release_pending: false,
                },
            ),
            (
                "transition: the active model serves and the target is not loaded",
                ask("m2"),
                now(Some(&steady), Absent, true, false),
                Transition {
                    release_pending: false,
                },
            ),
            (
                "a new target during a transition releases the pending one",
                ask("m3"),
                now(Some(&moving), Absent, true, false),
                Transition {
                    release_pending: true,
                },
            ),
            (
                "back to the active model during a transition",
                ask("m1"),
                now(Some(&moving), Matches, true, false),
                SwitchNow {
                    release_pending: true,
                },
            ),
            (
                "force switches even while the active model serves",
                Ask {
                    force: true,
                    ..ask("m2")
                },
                now(Some(&steady), Absent, true, false),
                SwitchNow {
                    release_pending: false,
                },
            ),
            (
                "updateOnly on an absent vmodel",
                Ask {
                    update_only: true,
                    ..ask("m1")
                },
                now(None, Absent, false, false),
                Refuse(Refusal::VModelNotFound),
            ),
            (
                "updateOnly on an existing vmodel",
                Ask {
                    update_only: true,
                    ..ask("m2")
                },
                now(Some(&steady), Absent, false, false),
                SwitchNow {
                    release_pending: false,
                },
            ),
            (
                "expectedTargetModelId matches",
                Ask {
                    expected_target: "m1",
                    ..ask("m2")
                },
                now(Some(&steady), Absent, true, false),
                Transition {
                    release_pending: false,
                },
            ),
            (
                "expectedTargetModelId mismatch",
                Ask {
                    expected_target: "m9",
                    ..ask("m2")
                },
                now(Some(&steady), Absent, true, false),
                Refuse(Refusal::ExpectedTargetMismatch),
            ),
            (
                "expectedTargetModelId on an absent vmodel must be the target",
                Ask {
                    expected_target: "m9",
                    ..ask("m2")
                },
                now(None, Absent, false, false),
                Refuse(Refusal::ExpectedTargetMismatch),
            ),
            (
                "expectedTargetModelId already reached",
                Ask {
                    expected_target: "m9",
                    ..ask("m1")
                },
                now(Some(&steady), Matches, true, true),
                Unchanged,
            ),
            (
                "owner mismatch",
                ask("m2"),
                now(Some(&theirs), Absent, true, false),
                Refuse(Refusal::OwnerMismatch("isvc".into())),
            ),
            (
                "no target and no modelInfo",
                Ask {
                    has_model_info: false,
                    ..ask("m2")
                },
                now(Some(&steady), Absent, true, false),
                Refuse(Refusal::TargetNotFound),
            ),
            (
                "a target with other attributes",
                ask("m2"),
                now(Some(&steady), Differs, true, false),
                Refuse(Refusal::TargetDiffers),
            ),
            (
                "an existing target without modelInfo",
                Ask {
                    has_model_info: false,
                    ..ask("m2")
                },
                now(Some(&steady), Matches, false, false),
                SwitchNow {
                    release_pending: false,
                },
            ),
        ];
        for (name, a, n, want) in cases {
            assert_eq!(decide(&a, &n), want, "{name}");
        }
    }
}
