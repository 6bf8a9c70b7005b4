//! What an attempt to serve a request came to, as a type: the routing loop (cluster.rs) decides
//! retries and failover by matching on [`Failure`], never on message text. Between pods the kind
//! travels as the `mm-outcome` metadata of the peer's status ([`crate::hop::OUTCOME`]), so the
//! sender reads the same type back; clients never see the marker.

use crate::error::MeshError;
use crate::hop::OUTCOME;
use crate::runtime::errors::connection_lost;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Status};

/// Why an attempt did not serve the request.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The runtime of the pod that tried is down or unreachable (or its store is): serve from
    /// another pod.
    RuntimeDown(Status),
    /// The copy is at its in-flight limit (`MM_MAX_INFLIGHT_PER_MODEL_COPY`): another copy may
    /// have room; never a reason to load one more.
    CopyFull(Status),
    /// The pod is at its in-flight limit (`MM_MAX_INFLIGHT_REQUESTS`).
    PodFull(Status),
    /// The peer asked to serve its copy has none (any more).
    NotHere(Status),
    /// The peer could not be reached, or died during the call.
    PeerDown(Status),
    /// Loading the model failed on the pod that tried.
    LoadFailed(Status),
    /// The model is not registered (a vmodel may have moved on).
    Gone(Status),
    /// Anything else: the answer for the client as it is (the runtime's own error, a bad
    /// request, a deadline).
    Fatal(Status),
}

impl Failure {
    fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Failure::RuntimeDown(_) => "runtime-down",
            Failure::CopyFull(_) => "copy-full",
            Failure::PodFull(_) => "pod-full",
            Failure::NotHere(_) => "not-here",
            Failure::LoadFailed(_) => "load-failed",
            Failure::Gone(_) => "gone",
            // A peer that is down sends nothing; the sender sees that for itself.
            Failure::PeerDown(_) | Failure::Fatal(_) => return None,
        })
    }

    /// The status inside.
    pub fn status(&self) -> &Status {
        match self {
            Failure::RuntimeDown(s)
            | Failure::CopyFull(s)
            | Failure::PodFull(s)
            | Failure::NotHere(s)
            | Failure::PeerDown(s)
            | Failure::LoadFailed(s)
            | Failure::Gone(s)
            | Failure::Fatal(s) => s,
        }
    }

    /// The status a client gets: the marker removed.
    pub fn into_client_status(self) -> Status {
        let mut s = self.into_status();
        s.metadata_mut().remove(OUTCOME);
        s
    }

    /// The status a peer gets over the internal hop: the kind marked, so it can fail over.
    pub fn into_wire_status(self) -> Status {
        let kind = self.kind();
        let mut s = self.into_status();
        match kind {
            Some(k) => {
                s.metadata_mut()
                    .insert(OUTCOME, AsciiMetadataValue::from_static(k));
            }
            None => {
                s.metadata_mut().remove(OUTCOME);
            }
        }
        s
    }

    fn into_status(self) -> Status {
        match self {
            Failure::RuntimeDown(s)
            | Failure::CopyFull(s)
            | Failure::PodFull(s)
            | Failure::NotHere(s)
            | Failure::PeerDown(s)
            | Failure::LoadFailed(s)
            | Failure::Gone(s)
            | Failure::Fatal(s) => s,
        }
    }

    /// A peer's answer read back: its marker says the kind; an unmarked UNAVAILABLE or a broken
    /// connection is the peer being down; anything else is the answer itself.
    pub fn from_peer(peer: &str, s: Status) -> Failure {
        let kind = s
            .metadata()
            .get(OUTCOME)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match kind.as_deref() {
            Some("runtime-down") => Failure::RuntimeDown(s),
            Some("copy-full") => Failure::CopyFull(s),
            Some("pod-full") => Failure::PodFull(s),
            Some("not-here") => Failure::NotHere(s),
            Some("load-failed") => Failure::LoadFailed(s),
            Some("gone") => Failure::Gone(s),
            _ if connection_lost(&s) => Failure::PeerDown(Status::unavailable(format!(
                "instance {peer} failed during the call: {}",
                s.message()
            ))),
            _ if s.code() == Code::Unavailable => Failure::PeerDown(s),
            _ => Failure::Fatal(s),
        }
    }

    /// A failure of the mesh's own steps (resolving, loading) on this pod.
    pub fn from_mesh(e: MeshError) -> Failure {
        match e {
            MeshError::LoadFailed { .. } => Failure::LoadFailed(e.into()),
            MeshError::Unavailable(_) => Failure::RuntimeDown(e.into()),
            MeshError::ModelNotFound(_) => Failure::Gone(e.into()),
            // The pod's load queue is full: another copy may serve, but no new load.
            MeshError::ResourceExhausted(_) => Failure::PodFull(e.into()),
            other => Failure::Fatal(other.into()),
        }
    }
}

impl From<MeshError> for Failure {
    fn from(e: MeshError) -> Failure {
        Failure::from_mesh(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Failure) -> Failure {
        Failure::from_peer("p", f.into_wire_status())
    }

    #[test]
    fn every_kind_survives_the_hop() {
        let s = || Status::internal("x");
        assert!(matches!(
            round_trip(Failure::RuntimeDown(s())),
            Failure::RuntimeDown(_)
        ));
        assert!(matches!(
            round_trip(Failure::CopyFull(s())),
            Failure::CopyFull(_)
        ));
        assert!(matches!(
            round_trip(Failure::PodFull(s())),
            Failure::PodFull(_)
        ));
        assert!(matches!(
            round_trip(Failure::NotHere(s())),
            Failure::NotHere(_)
        ));
        assert!(matches!(
            round_trip(Failure::LoadFailed(s())),
            Failure::LoadFailed(_)
        ));
        assert!(matches!(round_trip(Failure::Gone(s())), Failure::Gone(_)));
        assert!(matches!(round_trip(Failure::Fatal(s())), Failure::Fatal(_)));
    }

    #[test]
    fn a_peer_that_is_down_or_unmarked() {
        assert!(matches!(
            Failure::from_peer("p", Status::unavailable("connection refused")),
            Failure::PeerDown(_)
        ));
        let lost = Failure::from_peer("p", Status::unknown("transport error: reset"));
        assert!(matches!(lost, Failure::PeerDown(_)));
        assert_eq!(lost.status().code(), Code::Unavailable);
        // A runtime's own error passes through: a message saying "failed to load model" is
        // not a load failure unless the peer marked it.
        assert!(matches!(
            Failure::from_peer("p", Status::internal("failed to load model m: x")),
            Failure::Fatal(_)
        ));
    }

    #[test]
    fn clients_never_see_the_marker() {
        let wire = Failure::LoadFailed(Status::internal("failed")).into_wire_status();
        assert!(wire.metadata().get(OUTCOME).is_some());
        let client = Failure::from_peer("p", wire).into_client_status();
        assert!(client.metadata().get(OUTCOME).is_none());
        assert_eq!(client.code(), Code::Internal);
    }

    #[test]
    fn mesh_errors_map_to_kinds() {
        let load = MeshError::LoadFailed {
            id: "m".into(),
            message: "bad".into(),
        };
        assert!(matches!(Failure::from(load), Failure::LoadFailed(_)));
        assert!(matches!(
            Failure::from(MeshError::Unavailable("down".into())),
            Failure::RuntimeDown(_)
        ));
        assert!(matches!(
            Failure::from(MeshError::ModelNotFound("m".into())),
            Failure::Gone(_)
        ));
        assert!(matches!(
            Failure::from(MeshError::DeadlineExceeded("late".into())),
            Failure::Fatal(_)
        ));
    }
}
