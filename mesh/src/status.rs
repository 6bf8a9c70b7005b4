//! Mapping registry records and local copy state to the API's status messages. Pure.

use crate::local::CopyStatus;
use crate::registry::records::{ModelRecord, VModelRecord};
use modelmesh_proto::mmesh::{
    ModelStatusInfo, VModelStatusInfo,
    model_status_info::{ModelCopyInfo, ModelStatus},
    v_model_status_info::VModelStatus,
};

/// Status of a model from its record (None = not registered) and this pod's copy.
pub fn model_status(rec: Option<&ModelRecord>, local: Option<&CopyStatus>) -> ModelStatusInfo {
    let Some(rec) = rec else {
        return ModelStatusInfo {
            status: ModelStatus::NotFound as i32,
            ..Default::default()
        };
    };
    let status = match local {
        Some(CopyStatus::Loaded) => ModelStatus::Loaded,
        Some(CopyStatus::Loading) => ModelStatus::Loading,
        // This pod's own failure is fresher than a registry copy that may still list it.
        Some(CopyStatus::Failed(_)) => ModelStatus::LoadingFailed,
        Some(CopyStatus::Interrupted(_)) if !rec.instance_ids.is_empty() => ModelStatus::Loading,
        Some(CopyStatus::Interrupted(_)) => ModelStatus::NotLoaded,
        _ if !rec.instance_ids.is_empty() => ModelStatus::Loading,
        None if !rec.failed_in.is_empty() => ModelStatus::LoadingFailed,
        None => ModelStatus::NotLoaded,
    };
    let mut errors: Vec<String> = rec
        .fails
        .values()
        .map(|f| f.msg.clone())
        .filter(|m| !m.is_empty())
        .collect();
    if let (ModelStatus::LoadingFailed, Some(CopyStatus::Failed(m))) = (status, local)
        && !errors.contains(m)
    {
        errors.push(m.clone());
    }
    let mut copies: Vec<ModelCopyInfo> = rec
        .instance_ids
        .iter()
        .map(|(iid, t)| ModelCopyInfo {
            location: iid.clone(),
            copy_status: ModelStatus::Unknown as i32,
            time: *t,
        })
        .chain(rec.failed_in.iter().map(|(iid, t)| ModelCopyInfo {
            location: iid.clone(),
            copy_status: ModelStatus::LoadingFailed as i32,
            time: *t,
        }))
        .collect();
    copies.sort_by_key(|c| std::cmp::Reverse(c.time));
    ModelStatusInfo {
        status: status as i32,
        errors: if status == ModelStatus::LoadingFailed {
            errors
        } else {
            Vec::new()
        },
        model_copy_infos: copies,
    }
}

/// Status of a vmodel given its record and its models' statuses.
pub fn vmodel_status(
    vm: Option<&VModelRecord>,
    active: ModelStatusInfo,
    target: Option<ModelStatusInfo>,
) -> VModelStatusInfo {
    let Some(vm) = vm else {
        return VModelStatusInfo {
            status: VModelStatus::NotFound as i32,
            active_model_status: Some(ModelStatusInfo {
                status: ModelStatus::NotFound as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
    };
    let status = if !vm.in_transition() {
        VModelStatus::Defined
    } else if vm.failed {
        VModelStatus::TransitionFailed
    } else {
        VModelStatus::Transitioning
    };
    VModelStatusInfo {
        status: status as i32,
        active_model_id: vm.active.clone(),
        target_model_id: vm.target.clone(),
        active_model_status: Some(active),
        target_model_status: if vm.in_transition() { target } else { None },
        owner: vm.owner.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            model_status(None, None).status,
            ModelStatus::NotFound as i32
        );
        let mut r = ModelRecord::default();
        assert_eq!(
            model_status(Some(&r), None).status,
            ModelStatus::NotLoaded as i32
        );
        assert_eq!(
            model_status(Some(&r), Some(&CopyStatus::Loaded)).status,
            ModelStatus::Loaded as i32
        );
        r.failed_in.insert("i1".into(), 5);
        r.fails.insert(
            "i1".into(),
            crate::registry::records::FailureMessage { msg: "bad".into() },
        );
        let s = model_status(Some(&r), None);
        assert_eq!(s.status, ModelStatus::LoadingFailed as i32);
        assert_eq!(s.errors, vec!["bad".to_string()]);
        let vm = VModelRecord {
            owner: "o".into(),
            active: "a".into(),
            target: "b".into(),
            failed: true,
            ..Default::default()
        };
        let v = vmodel_status(Some(&vm), s.clone(), Some(s));
        assert_eq!(v.status, VModelStatus::TransitionFailed as i32);
        assert_eq!(
            vmodel_status(None, ModelStatusInfo::default(), None).status,
            VModelStatus::NotFound as i32
        );
    }
}
