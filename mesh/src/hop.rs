//! The hop protocol between the mesh's pods: a request forwarded to a peer's internal port
//! carries `mm-hop` (serve only a copy loaded there, or load one there), optionally the model's
//! real size and whether the copy may evict; a failure's kind comes back in `mm-outcome`. Only the
//! internal port honours these headers; clients may not send them.

use tonic::Status;
use tonic::metadata::MetadataMap;

/// How a request reached this pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// From a client (port 8033 / REST): route across the cluster.
    External,
    /// From a peer: serve only if the model is loaded here.
    HitOnly,
    /// From a peer: load the model here if needed, then serve.
    LoadHere,
}

impl Hop {
    /// The hop a peer asked for in the `mm-hop` header (internal port only); no header is a
    /// request routed as from a client, any other value is refused.
    pub fn from_header(md: &MetadataMap) -> Result<Hop, Status> {
        let Some(v) = md.get(HOP) else {
            return Ok(Hop::External);
        };
        match v.to_str() {
            Ok("hit") => Ok(Hop::HitOnly),
            Ok("load") => Ok(Hop::LoadHere),
            _ => Err(Status::invalid_argument(format!(
                "{HOP} must be 'hit' or 'load', not {v:?}"
            ))),
        }
    }

    /// The `mm-hop` value that asks a peer for this hop (none for a client's request).
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Hop::External => None,
            Hop::HitOnly => Some("hit"),
            Hop::LoadHere => Some("load"),
        }
    }
}

/// Header carrying the hop instruction between pods (honoured only on the internal port).
pub const HOP: &str = "mm-hop";
/// Header with the real size (bytes) of the model a `load` hop asks for, when the sender knows
/// it (it held a copy), so the receiver admits it at its true size.
pub const KNOWN_SIZE: &str = "mm-known-size";

/// The known size a peer sent, if any; a value that is not a byte count is refused.
pub fn known_size(md: &MetadataMap) -> Result<Option<u64>, Status> {
    let Some(v) = md.get(KNOWN_SIZE) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!("{KNOWN_SIZE} must be a byte count, not {v:?}"))
        })
}

/// The room a `load` hop may take (`mm-room-only: free`, or none: it may evict).
pub fn room(md: &MetadataMap) -> Result<crate::local::Room, Status> {
    match md.get(ROOM_ONLY).map(|v| v.to_str()) {
        None => Ok(crate::local::Room::MayEvict),
        Some(Ok("free")) => Ok(crate::local::Room::FreeOnly),
        Some(_) => Err(Status::invalid_argument(format!(
            "{ROOM_ONLY} must be 'free' when present"
        ))),
    }
}

/// Refuses the metadata that steers hops between pods (`mm-hop`, `mm-known-size`, `mm-room-only`) on a request
/// from a client: only a peer on the internal port may send it, so a client cannot make a pod
/// skip routing or admit a model at a size it made up.
pub fn refuse_hop_metadata(md: &MetadataMap) -> Result<(), Status> {
    for name in [HOP, KNOWN_SIZE, ROOM_ONLY] {
        if md.get(name).is_some() {
            return Err(Status::invalid_argument(format!(
                "request metadata {name} is reserved for hops between mesh pods and is not accepted from clients; remove it"
            )));
        }
    }
    Ok(())
}

/// Header on a `load` hop asking the receiver to take the copy only into free room (value
/// `free`): the copy is moving away from a pod that evicted it.
pub const ROOM_ONLY: &str = "mm-room-only";

/// Metadata on a peer's failure naming its kind (`not-here`, `copy-full`, `load-failed`, ...;
/// route/outcome.rs), so the sender fails over by type. Removed before a client sees a status.
pub const OUTCOME: &str = "mm-outcome";

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn md(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn clients_cannot_send_hop_metadata() {
        assert!(refuse_hop_metadata(&md(&[("mm-model-id", "m")])).is_ok());
        for (k, v) in [("mm-hop", "load"), ("mm-known-size", "1")] {
            let e = refuse_hop_metadata(&md(&[(k, v)])).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains(k), "{}", e.message());
        }
    }

    #[test]
    fn known_size_is_read_only_when_it_is_a_number() {
        assert_eq!(
            known_size(&md(&[(KNOWN_SIZE, "39508")])).ok(),
            Some(Some(39508))
        );
        for bad in ["big", "-1"] {
            let e = known_size(&md(&[(KNOWN_SIZE, bad)])).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains(KNOWN_SIZE), "{}", e.message());
        }
        assert_eq!(known_size(&md(&[])).ok(), Some(None));
        assert_eq!(
            Hop::from_header(&md(&[(HOP, "hit")])).ok(),
            Some(Hop::HitOnly)
        );
        assert_eq!(Hop::from_header(&md(&[])).ok(), Some(Hop::External));
        let e = Hop::from_header(&md(&[(HOP, "jump")])).unwrap_err();
        assert!(e.message().contains("'hit' or 'load'"), "{}", e.message());
    }
}
