//! The mesh's view of a vmodel (`VModelStatusInfo`) → a Predictor's status, as upstream maps it:
//! model states, transition status, the last failure with its five reasons, copy counts and
//! availability; and a Predictor status → an InferenceService's status. Pure over a clock.

use crate::crd::inference_service::{
    ComponentStatus, Condition, InferenceServiceStatus, IsvcFailureInfo, ModelCopies, ModelStates,
    ModelStatus as IsvcModelStatus,
};
use crate::crd::predictor::{
    FailureInfo, FailureReason, ModelState, PredictorStatus, TransitionStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use modelmesh_proto::mmesh::v_model_status_info::VModelStatus;
use modelmesh_proto::mmesh::{ModelStatusInfo, VModelStatusInfo};

/// The mesh's message when no pod may hold a model type (its prefix).
const NO_INSTANCES: &str =
    "There are no running instances that meet the label requirements of type ";
/// Type constraint of types no runtime supports (see `labels::type_constraints`).
const NO_RUNTIME: &str = "[_no_runtime]";
/// A failure time younger than this is kept, so status writes do not loop on a moving clock.
const FAILURE_TIME_REUSE_MS: i64 = 20_000;

/// Where clients reach the predictors of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// e.g. `grpc://modelmesh-serving.<ns>:8033`.
    pub grpc: String,
    /// e.g. `http://modelmesh-serving.<ns>:8008` (REST enabled).
    pub http: Option<String>,
}

/// Milliseconds since the epoch → a Kubernetes time.
pub fn time_ms(ms: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(Time)
}

fn ms_of(t: &Time) -> i64 {
    t.0.as_millisecond()
}

/// A failure the mesh reported: why, the message, and where and when (load failures).
type Failure = (FailureReason, String, Option<(String, u64)>);

/// A model's state, and the failure that explains it (if any), from its status in the mesh.
fn decode(info: Option<&ModelStatusInfo>, type_label: &str) -> (ModelState, Option<Failure>) {
    let Some(info) = info else {
        return (ModelState::Pending, None);
    };
    match ModelStatus::try_from(info.status).unwrap_or(ModelStatus::Unknown) {
        ModelStatus::NotLoaded => (ModelState::Standby, None),
        ModelStatus::Loading => (ModelState::Loading, None),
        ModelStatus::Loaded => (ModelState::Loaded, None),
        ModelStatus::LoadingFailed => {
            let first = info.errors.first().cloned().unwrap_or_default();
            if first.starts_with(NO_INSTANCES) {
                if first.ends_with(NO_RUNTIME) {
                    let (reason, msg) = if type_label.starts_with("rt:") {
                        (
                            FailureReason::RuntimeNotRecognized,
                            "Specified runtime name not recognized",
                        )
                    } else {
                        (
                            FailureReason::NoSupportingRuntime,
                            "No ServingRuntime supports specified model type and/or protocol",
                        )
                    };
                    return (ModelState::FailedToLoad, Some((reason, msg.into(), None)));
                }
                return (
                    ModelState::Loading,
                    Some((
                        FailureReason::RuntimeUnhealthy,
                        "Waiting for supporting runtime Pod to become available".into(),
                        None,
                    )),
                );
            }
            let place = info
                .model_copy_infos
                .iter()
                .find(|c| c.copy_status == ModelStatus::LoadingFailed as i32)
                .map(|c| (c.location.clone(), c.time));
            (
                ModelState::FailedToLoad,
                Some((FailureReason::ModelLoadFailed, first, place)),
            )
        }
        ModelStatus::Unknown | ModelStatus::NotFound => (ModelState::Pending, None),
    }
}

fn copies(info: Option<&ModelStatusInfo>) -> (i32, i32) {
    info.map(|i| {
        let failed = i
            .model_copy_infos
            .iter()
            .filter(|c| c.copy_status == ModelStatus::LoadingFailed as i32)
            .count();
        (failed as i32, i.model_copy_infos.len() as i32)
    })
    .unwrap_or((0, 0))
}

/// The status of a predictor whose vmodel the mesh reports as `vm` (None: not yet known).
pub fn predictor_status(
    vm: Option<&VModelStatusInfo>,
    type_label: &str,
    previous: &PredictorStatus,
    endpoints: &Endpoints,
    now_ms: i64,
) -> PredictorStatus {
    let mut st = PredictorStatus {
        grpc_endpoint: Some(endpoints.grpc.clone()),
        http_endpoint: endpoints.http.clone(),
        target_model_state: ModelState::None,
        ..Default::default()
    };
    let Some(vm) = vm else {
        st.available = false;
        return st;
    };
    let active = vm.active_model_status.as_ref();
    let in_transition = !vm.target_model_id.is_empty() && vm.target_model_id != vm.active_model_id;
    let target = in_transition
        .then_some(vm.target_model_status.as_ref())
        .flatten();
    let (active_state, active_failure) = decode(active, type_label);
    st.active_model_state = active_state;
    let mut failure = active_failure.map(|f| (f, vm.active_model_id.clone()));
    if in_transition {
        let (target_state, target_failure) = decode(target, type_label);
        st.target_model_state = target_state;
        if target_state != ModelState::Loaded
            && let Some(f) = target_failure
        {
            failure = Some((f, vm.target_model_id.clone()));
        }
    }
    st.transition_status = match VModelStatus::try_from(vm.status).unwrap_or(VModelStatus::Unknown)
    {
        VModelStatus::Transitioning => TransitionStatus::InProgress,
        VModelStatus::TransitionFailed if st.target_model_state == ModelState::Loading => {
            TransitionStatus::InProgress
        }
        VModelStatus::TransitionFailed => TransitionStatus::BlockedByFailedLoad,
        _ => TransitionStatus::UpToDate,
    };
    st.last_failure_info = failure.map(|((reason, message, place), model_id)| {
        let time = match (&place, reason) {
            (Some((_, t)), FailureReason::ModelLoadFailed) if *t > 0 => time_ms(*t as i64),
            _ => previous
                .last_failure_info
                .as_ref()
                .filter(|p| p.reason == Some(reason))
                .and_then(|p| p.time.clone())
                .filter(|t| now_ms - ms_of(t) < FAILURE_TIME_REUSE_MS)
                .or_else(|| time_ms(now_ms)),
        };
        FailureInfo {
            location: place.map(|(l, _)| l).filter(|l| !l.is_empty()),
            reason: Some(reason),
            message: Some(message),
            model_id: Some(model_id),
            time,
        }
    });
    let (af, at) = copies(active);
    let (tf, tt) = if in_transition {
        copies(target)
    } else {
        (0, 0)
    };
    st.failed_copies = af + tf;
    st.total_copies = at + tt;
    st.available = st.active_model_state != ModelState::None
        && st.active_model_state != ModelState::FailedToLoad
        && st
            .last_failure_info
            .as_ref()
            .and_then(|f| f.reason)
            .is_none_or(|r| r != FailureReason::RuntimeUnhealthy);
    st
}

/// The status of a predictor whose spec is invalid: the mesh's active model (if any) keeps its
/// state; the failure names the problem.
pub fn invalid_status(
    vm: Option<&VModelStatusInfo>,
    type_label: &str,
    message: &str,
    previous: &PredictorStatus,
    endpoints: &Endpoints,
    now_ms: i64,
) -> PredictorStatus {
    let mut st = predictor_status(vm, type_label, previous, endpoints, now_ms);
    st.transition_status = TransitionStatus::InvalidSpec;
    st.target_model_state = ModelState::None;
    let time = previous
        .last_failure_info
        .as_ref()
        .filter(|p| {
            p.reason == Some(FailureReason::InvalidPredictorSpec)
                && p.message.as_deref() == Some(message)
        })
        .and_then(|p| p.time.clone())
        .or_else(|| time_ms(now_ms));
    st.last_failure_info = Some(FailureInfo {
        location: None,
        reason: Some(FailureReason::InvalidPredictorSpec),
        message: Some(message.to_string()),
        model_id: None,
        time,
    });
    st
}

fn state_name(s: ModelState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// An InferenceService's status from its predictor's: model states, copies, the last failure,
/// and when available the URLs and `PredictorReady` (and `Ready`) conditions.
pub fn isvc_status(
    p: &PredictorStatus,
    previous: &InferenceServiceStatus,
    now_ms: i64,
) -> InferenceServiceStatus {
    let transition = serde_json::to_value(p.transition_status)
        .ok()
        .and_then(|v| v.as_str().map(String::from));
    let mut out = InferenceServiceStatus {
        model_status: Some(IsvcModelStatus {
            transition_status: transition,
            states: Some(ModelStates {
                active_model_state: state_name(p.active_model_state),
                target_model_state: Some(state_name(p.target_model_state))
                    .filter(|s| !s.is_empty()),
            }),
            copies: Some(ModelCopies {
                failed_copies: p.failed_copies,
                total_copies: Some(p.total_copies),
            }),
            last_failure_info: p.last_failure_info.as_ref().map(|f| IsvcFailureInfo {
                location: f.location.clone(),
                reason: f
                    .reason
                    .and_then(|r| serde_json::to_value(r).ok())
                    .and_then(|v| v.as_str().map(String::from)),
                message: f.message.clone(),
                model_revision_name: f.model_id.clone(),
                time: f.time.clone(),
                exit_code: None,
            }),
        }),
        ..Default::default()
    };
    let (status, reason, message) = if p.available {
        ("True", None, None)
    } else {
        (
            "False",
            Some("PredictorNotReady".to_string()),
            p.last_failure_info.as_ref().and_then(|f| f.message.clone()),
        )
    };
    if p.available {
        out.url = p.grpc_endpoint.clone();
        out.components.insert(
            "predictor".into(),
            ComponentStatus {
                url: p.grpc_endpoint.clone(),
                grpc_url: p.grpc_endpoint.clone(),
                rest_url: p.http_endpoint.clone(),
            },
        );
    }
    for kind in ["PredictorReady", "Ready"] {
        let unchanged = previous
            .conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone());
        out.conditions.push(Condition {
            type_: kind.to_string(),
            status: status.to_string(),
            reason: reason.clone(),
            message: message.clone(),
            severity: None,
            last_transition_time: unchanged.or_else(|| time_ms(now_ms)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelmesh_proto::mmesh::model_status_info::ModelCopyInfo;

    fn model(
        status: ModelStatus,
        errors: &[&str],
        copies: &[(&str, ModelStatus, u64)],
    ) -> ModelStatusInfo {
        ModelStatusInfo {
            status: status as i32,
            errors: errors.iter().map(|e| e.to_string()).collect(),
            model_copy_infos: copies
                .iter()
                .map(|(l, s, t)| ModelCopyInfo {
                    location: l.to_string(),
                    copy_status: *s as i32,
                    time: *t,
                })
                .collect(),
        }
    }

    fn vm(
        status: VModelStatus,
        active: ModelStatusInfo,
        target: Option<ModelStatusInfo>,
    ) -> VModelStatusInfo {
        VModelStatusInfo {
            status: status as i32,
            active_model_id: "m__ksp-a".into(),
            target_model_id: if target.is_some() {
                "m__ksp-b".into()
            } else {
                "m__ksp-a".into()
            },
            active_model_status: Some(active),
            target_model_status: target,
            owner: "ksp".into(),
        }
    }

    fn ep() -> Endpoints {
        Endpoints {
            grpc: "grpc://modelmesh-serving.ns:8033".into(),
            http: Some("http://modelmesh-serving.ns:8008".into()),
        }
    }

    #[test]
    fn loaded_and_up_to_date_is_available() {
        let v = vm(
            VModelStatus::Defined,
            model(
                ModelStatus::Loaded,
                &[],
                &[("pod-a", ModelStatus::Unknown, 5)],
            ),
            None,
        );
        let s = predictor_status(Some(&v), "mt:onnx", &Default::default(), &ep(), 1_000);
        assert_eq!(s.active_model_state, ModelState::Loaded);
        assert_eq!(s.target_model_state, ModelState::None);
        assert_eq!(s.transition_status, TransitionStatus::UpToDate);
        assert!(s.available && s.last_failure_info.is_none());
        assert_eq!((s.failed_copies, s.total_copies), (0, 1));
        assert_eq!(
            s.grpc_endpoint.as_deref(),
            Some("grpc://modelmesh-serving.ns:8033")
        );
    }

    #[test]
    fn failed_target_blocks_the_transition_with_the_load_error() {
        let v = vm(
            VModelStatus::TransitionFailed,
            model(
                ModelStatus::Loaded,
                &[],
                &[("pod-a", ModelStatus::Unknown, 5)],
            ),
            Some(model(
                ModelStatus::LoadingFailed,
                &["file not found"],
                &[("pod-b", ModelStatus::LoadingFailed, 7_000)],
            )),
        );
        let s = predictor_status(Some(&v), "mt:onnx", &Default::default(), &ep(), 9_000);
        assert_eq!(s.transition_status, TransitionStatus::BlockedByFailedLoad);
        assert_eq!(s.target_model_state, ModelState::FailedToLoad);
        let f = s.last_failure_info.clone().unwrap();
        assert_eq!(f.reason, Some(FailureReason::ModelLoadFailed));
        assert_eq!(f.message.as_deref(), Some("file not found"));
        assert_eq!(f.location.as_deref(), Some("pod-b"));
        assert_eq!(f.model_id.as_deref(), Some("m__ksp-b"));
        assert_eq!(f.time.map(|t| ms_of(&t)), Some(7_000));
        assert!(s.available, "the active model still serves");
        assert_eq!((s.failed_copies, s.total_copies), (1, 2));
    }

    #[test]
    fn label_errors_decode_to_runtime_reasons() {
        let no_runtime = "There are no running instances that meet the label requirements of type mt:foo: [_no_runtime]";
        let v = vm(
            VModelStatus::Defined,
            model(ModelStatus::LoadingFailed, &[no_runtime], &[]),
            None,
        );
        let s = predictor_status(Some(&v), "mt:foo", &Default::default(), &ep(), 0);
        assert_eq!(s.active_model_state, ModelState::FailedToLoad);
        assert_eq!(
            s.last_failure_info.as_ref().unwrap().reason,
            Some(FailureReason::NoSupportingRuntime)
        );
        let s = predictor_status(Some(&v), "rt:nope", &Default::default(), &ep(), 0);
        assert_eq!(
            s.last_failure_info.unwrap().reason,
            Some(FailureReason::RuntimeNotRecognized)
        );
        let waiting = "There are no running instances that meet the label requirements of type mt:onnx: [mt:onnx]";
        let v = vm(
            VModelStatus::Defined,
            model(ModelStatus::LoadingFailed, &[waiting], &[]),
            None,
        );
        let first = predictor_status(Some(&v), "mt:onnx", &Default::default(), &ep(), 100_000);
        assert_eq!(first.active_model_state, ModelState::Loading);
        assert_eq!(
            first.last_failure_info.as_ref().unwrap().reason,
            Some(FailureReason::RuntimeUnhealthy)
        );
        assert!(!first.available);
        // Within 20 s the failure keeps its time; after, it moves.
        let again = predictor_status(Some(&v), "mt:onnx", &first, &ep(), 110_000);
        assert_eq!(again.last_failure_info, first.last_failure_info);
        let later = predictor_status(Some(&v), "mt:onnx", &first, &ep(), 130_000);
        assert_ne!(later.last_failure_info, first.last_failure_info);
    }

    #[test]
    fn states_and_missing_status() {
        let s = predictor_status(None, "mt:onnx", &Default::default(), &ep(), 0);
        assert_eq!(s.active_model_state, ModelState::Pending);
        assert!(!s.available);
        let v = vm(
            VModelStatus::Transitioning,
            model(ModelStatus::NotLoaded, &[], &[]),
            Some(model(ModelStatus::Loading, &[], &[])),
        );
        let s = predictor_status(Some(&v), "mt:onnx", &Default::default(), &ep(), 0);
        assert_eq!(
            (
                s.active_model_state,
                s.target_model_state,
                s.transition_status
            ),
            (
                ModelState::Standby,
                ModelState::Loading,
                TransitionStatus::InProgress
            )
        );
        assert!(s.available, "a standby model loads on the first request");
        // A failed transition whose target is loading again counts as in progress.
        let v = vm(
            VModelStatus::TransitionFailed,
            model(ModelStatus::Loaded, &[], &[]),
            Some(model(ModelStatus::Loading, &[], &[])),
        );
        let s = predictor_status(Some(&v), "mt:onnx", &Default::default(), &ep(), 0);
        assert_eq!(s.transition_status, TransitionStatus::InProgress);
    }

    #[test]
    fn invalid_spec_and_isvc_status() {
        let s = invalid_status(
            None,
            "mt:onnx",
            "spec.path and spec.storage.path cannot both be set",
            &Default::default(),
            &ep(),
            5,
        );
        assert_eq!(s.transition_status, TransitionStatus::InvalidSpec);
        assert_eq!(
            s.last_failure_info.as_ref().unwrap().reason,
            Some(FailureReason::InvalidPredictorSpec)
        );
        let i = isvc_status(&s, &Default::default(), 5);
        assert_eq!(i.conditions[0].type_, "PredictorReady");
        assert_eq!(i.conditions[0].status, "False");
        assert!(i.url.is_none());
        let v = vm(
            VModelStatus::Defined,
            model(ModelStatus::Loaded, &[], &[]),
            None,
        );
        let ok = predictor_status(Some(&v), "mt:onnx", &Default::default(), &ep(), 0);
        let i = isvc_status(&ok, &Default::default(), 10);
        assert_eq!(i.url.as_deref(), Some("grpc://modelmesh-serving.ns:8033"));
        assert_eq!(
            i.components["predictor"].rest_url.as_deref(),
            Some("http://modelmesh-serving.ns:8008")
        );
        assert!(i.conditions.iter().all(|c| c.status == "True"));
        let ms = i.model_status.clone().unwrap();
        assert_eq!(ms.states.unwrap().active_model_state, "Loaded");
        assert_eq!(ms.transition_status.as_deref(), Some("UpToDate"));
        // Unchanged conditions keep their transition time.
        let again = isvc_status(&ok, &i, 99);
        assert_eq!(again.conditions, i.conditions);
    }
}
