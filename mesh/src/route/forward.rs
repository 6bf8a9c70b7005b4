//! Sending a request to a peer's internal port with a hop instruction (`hit`: serve your copy;
//! `load`: load one and serve), unary or streaming. The peer's failure comes back typed
//! ([`Failure::from_peer`]); a stream is handed back once the peer's first answer is here.

use super::inbound::Splice;
use super::outcome::Failure;
use super::request::{Req, peer_headers, set_deadline};
use super::served::{Held, Served};
use super::{Call, Router};
use crate::codec::{RawCodec, StreamCodec};
use crate::hop::{Hop, OUTCOME};
use crate::registry::records::InstanceRecord;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;

impl Router {
    /// Sends the call to `peer` with `hop` (HitOnly or LoadHere).
    pub(super) async fn forward(
        &self,
        req: &Req<'_>,
        call: &Call,
        id: &str,
        peer: &str,
        instances: &BTreeMap<String, InstanceRecord>,
        hop: Hop,
    ) -> Result<Served, Failure> {
        let Some(addr) = instances
            .get(peer)
            .map(|i| i.internal_address.as_str())
            .filter(|a| !a.is_empty())
        else {
            return Err(Failure::PeerDown(Status::unavailable(format!(
                "instance {peer} has no internal address"
            ))));
        };
        let channel = self
            .mesh
            .placement
            .peer(addr)
            .map_err(|e| Failure::PeerDown(e.into()))?;
        let known = match hop {
            Hop::LoadHere => self.mesh.local.known_size(id),
            _ => None,
        };
        let headers = peer_headers(req.md, id, hop, known);
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready().await.map_err(|e| {
            Failure::PeerDown(Status::unavailable(format!(
                "instance {peer} not reachable: {e}"
            )))
        })?;
        metrics::counter!("modelmesh_forwarded_requests", "hop" => hop.header_value().unwrap_or("none"))
            .increment(1);
        match call {
            Call::Unary(body) => {
                let mut r =
                    tonic::Request::from_parts(headers, tonic::Extensions::default(), body.clone());
                set_deadline(&mut r, req.deadline, "the peer").map_err(Failure::Fatal)?;
                let resp = grpc
                    .unary(r, req.path.clone(), RawCodec)
                    .await
                    .map_err(|s| Failure::from_peer(peer, s))?;
                let (md, body, _) = resp.into_parts();
                Ok(Served::Unary(md, body))
            }
            Call::Stream(inbound) => {
                // The peer splices the id for its runtime; the messages go as they came.
                let same: Splice = Arc::new(|m| m);
                let (gate, outbound) = inbound.attempt(same);
                let mut r =
                    tonic::Request::from_parts(headers, tonic::Extensions::default(), outbound);
                set_deadline(&mut r, req.deadline, "the peer").map_err(Failure::Fatal)?;
                let resp = grpc
                    .streaming(r, req.path.clone(), StreamCodec)
                    .await
                    .map_err(|s| Failure::from_peer(peer, s))?;
                gate.accepted();
                let (md, mut answers, _) = resp.into_parts();
                let first = match answers.next().await {
                    Some(Err(s)) => return Err(Failure::from_peer(peer, s)),
                    first => first,
                };
                gate.open();
                let stream = futures::stream::iter(first).chain(answers).boxed();
                Ok(Served::Stream(md, Held::new(stream).strip(OUTCOME)))
            }
        }
    }
}
