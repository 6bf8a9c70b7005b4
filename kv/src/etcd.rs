//! The etcd backend (etcd-client). Watches run in a task that reconnects after any failure and
//! resumes from the revision after the last event it delivered, so a dropped connection or an
//! etcd restart loses no events.

use super::{
    Compare, Event, KeyValue, KvError, KvStore, LeaseId, Op, Revision, TxnOutcome, WatchStream,
};
use etcd_client as ec;
use std::time::Duration;
use tokio::sync::mpsc;

/// A connection to an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: ec::Client,
}

/// How to reach etcd.
#[derive(Clone, Default)]
pub struct EtcdConfig {
    /// `http://host:port` (or `https://`) endpoints.
    pub endpoints: Vec<String>,
    /// Optional user name and password.
    pub user: Option<(String, String)>,
    /// TLS to etcd (with `https://` endpoints).
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdConfig {
    // Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS settings for the etcd client, from the connection JSON's `certificate[_file]`,
/// `client_certificate[_file]`, `client_key[_file]` and `override_authority`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificates (PEM) etcd's certificate is verified against.
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and key (PEM), for etcd's `--client-cert-auth`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify etcd's certificate against, instead of the endpoint's host.
    pub authority: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    // Never prints the client key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_bytes", &self.ca_pem.len())
            .field("client_certificate", &self.client.is_some())
            .field("authority", &self.authority)
            .finish()
    }
}

impl EtcdTls {
    fn options(&self) -> ec::TlsOptions {
        let mut o = ec::TlsOptions::new().ca_certificate(ec::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client {
            o = o.identity(ec::Identity::from_pem(cert, key));
        }
        if let Some(a) = &self.authority {
            o = o.domain_name(a.clone());
        }
        o
    }
}

/// Keys per page of a range read.
const PAGE_KEYS: i64 = 1000;

/// How often a paged read starts over because its revision was compacted, before it gives up.
const MAX_RANGE_RESTARTS: u32 = 5;

/// The largest response decoded (tonic's default is 4 MiB). A page that is still larger is
/// read again in smaller pages.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key (etcd's "\0" range end)
}

/// Why a page read failed, where the next step depends on it.
enum RangeFailure {
    /// More than [`MAX_RESPONSE_BYTES`]: read smaller pages.
    PageTooLarge,
    /// The pinned revision is gone.
    Compacted,
    /// Anything else.
    Other,
}

/// Classifies a page read's error. Both cases arrive as OUT_OF_RANGE (tonic's decode limit on
/// our side, etcd's ErrCompacted on the server's); only the text tells them apart, and it is
/// read here and nowhere else.
fn range_failure(e: &ec::Error, pinned: bool) -> RangeFailure {
    match e {
        ec::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange => {
            if pinned && s.message().contains("compacted") {
                RangeFailure::Compacted
            } else {
                RangeFailure::PageTooLarge
            }
        }
        _ => RangeFailure::Other,
    }
}

fn unavailable(e: ec::Error) -> KvError {
    KvError::Unavailable(e.to_string())
}

fn convert(kv: &ec::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

impl EtcdStore {
    /// Connects (failing after `timeout` if no endpoint answers).
    pub async fn connect(cfg: &EtcdConfig, timeout: Duration) -> Result<EtcdStore, KvError> {
        if cfg.endpoints.is_empty() {
            return Err(KvError::Other("no etcd endpoints configured".into()));
        }
        let mut opts = ec::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(Duration::from_secs(30));
        if let Some((u, p)) = &cfg.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if let Some(tls) = &cfg.tls {
            opts = opts.with_tls(tls.options());
        } else if cfg.endpoints.iter().any(|e| e.starts_with("https://")) {
            return Err(KvError::Other(
                "https etcd endpoints need a CA certificate: set certificate or certificate_file in the etcd connection".into(),
            ));
        }
        let connect = ec::Client::connect(cfg.endpoints.clone(), Some(opts));
        let mut client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| {
                KvError::Unavailable(format!(
                    "no answer from etcd at {} within {timeout:?}",
                    cfg.endpoints.join(",")
                ))
            })?
            .map_err(|e| {
                KvError::Unavailable(format!(
                    "cannot connect to etcd at {}: {e}",
                    cfg.endpoints.join(",")
                ))
            })?;
        // A count-only read proves the cluster answers (connect() alone is lazy).
        tokio::time::timeout(
            timeout,
            client.get("/", Some(ec::GetOptions::new().with_count_only())),
        )
        .await
        .map_err(|_| {
            KvError::Unavailable(format!(
                "etcd at {} did not answer within {timeout:?}",
                cfg.endpoints.join(",")
            ))
        })?
        .map_err(|e| {
            KvError::Unavailable(format!(
                "etcd at {} refused a read: {e}",
                cfg.endpoints.join(",")
            ))
        })?;
        Ok(EtcdStore { client })
    }

    async fn current_revision(&self) -> Result<Revision, KvError> {
        let r = self
            .client
            .clone()
            .get("/", Some(ec::GetOptions::new().with_count_only()))
            .await
            .map_err(unavailable)?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }
}

/// Forwards one watch connection's events until it fails; returns the next revision to resume
/// from, or the terminal error.
async fn pump(
    client: &mut ec::Client,
    prefix: &str,
    from: Revision,
    tx: &mpsc::UnboundedSender<Result<Vec<Event>, KvError>>,
) -> Result<Revision, (Revision, Option<KvError>)> {
    let opts = ec::WatchOptions::new()
        .with_prefix()
        .with_start_revision(from);
    // A transaction of many keys arrives as one large watch response.
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .watch(prefix, Some(opts))
        .await
        .map_err(|e| (from, Some(unavailable(e))))?;
    let mut next = from;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err((next, None)),
            Err(e) => return Err((next, Some(unavailable(e)))),
        };
        if msg.compact_revision() > 0 {
            let _ = tx.send(Err(KvError::Compacted(next)));
            return Ok(-1);
        }
        if msg.canceled() {
            return Err((
                next,
                Some(KvError::Other(format!(
                    "watch cancelled: {}",
                    msg.cancel_reason()
                ))),
            ));
        }
        let events: Vec<Event> = msg
            .events()
            .iter()
            .filter_map(|e| {
                let kv = e.kv()?;
                Some(match e.event_type() {
                    ec::EventType::Put => Event::Put(convert(kv)),
                    ec::EventType::Delete => Event::Delete {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        mod_revision: kv.mod_revision(),
                    },
                })
            })
            .collect();
        if let Some(last) = events.last() {
            next = last.revision() + 1;
            if tx.send(Ok(events)).is_err() {
                return Ok(-1); // the receiver is gone
            }
        }
    }
}

#[tonic::async_trait]
impl KvStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let r = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        Ok(r.kvs().first().map(convert))
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        // Page by page at the revision of the first page, so a registry of any size loads
        // (one unpaginated read of 30,000 models went past the client's 4 MiB limit) and the
        // result is one consistent view.
        let end = prefix_end(prefix.as_bytes());
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut limit = PAGE_KEYS;
        let mut restarts = 0u32;
        let mut out = Vec::new();
        loop {
            let mut opts = ec::GetOptions::new()
                .with_range(end.clone())
                .with_limit(limit);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let page = match kv.get(start.clone(), Some(opts)).await {
                Ok(p) => p,
                Err(e) => match range_failure(&e, revision > 0) {
                    RangeFailure::PageTooLarge if limit > 1 => {
                        limit = (limit / 2).max(1);
                        continue;
                    }
                    // The pinned revision was compacted between two pages: start over at the
                    // newest revision.
                    RangeFailure::Compacted if restarts < MAX_RANGE_RESTARTS => {
                        restarts += 1;
                        tracing::info!(
                            prefix,
                            revision,
                            restarts,
                            "revision compacted while paging; reading again"
                        );
                        // Compaction that outpaces a read: give it a moment before starting over.
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(restarts))).await;
                        (start, revision, limit) = (prefix.as_bytes().to_vec(), 0, PAGE_KEYS);
                        out.clear();
                        continue;
                    }
                    _ => return Err(unavailable(e)),
                },
            };
            if revision == 0 {
                revision = page.header().map(|h| h.revision()).unwrap_or(0);
            }
            out.extend(page.kvs().iter().map(convert));
            match page.kvs().last() {
                Some(last) if page.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((out, revision))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome, KvError> {
        let keys: Vec<String> = compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, _) => k.clone(),
            })
            .collect();
        let cmps: Vec<ec::Compare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::ModRevision(k, rev) => {
                    ec::Compare::mod_revision(k, ec::CompareOp::Equal, rev)
                }
            })
            .collect();
        let then: Vec<ec::TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let opts = (lease != 0).then(|| ec::PutOptions::new().with_lease(lease));
                    ec::TxnOp::put(key, value, opts)
                }
                Op::Delete(key) => ec::TxnOp::delete(key, None),
            })
            .collect();
        let otherwise: Vec<ec::TxnOp> = keys
            .iter()
            .map(|k| ec::TxnOp::get(k.clone(), None))
            .collect();
        let txn = ec::Txn::new().when(cmps).and_then(then).or_else(otherwise);
        let r = self.client.clone().txn(txn).await.map_err(|e| {
            if e.to_string().contains("requested lease not found") {
                KvError::LeaseNotFound(0)
            } else {
                unavailable(e)
            }
        })?;
        let revision = r.header().map(|h| h.revision()).unwrap_or(0);
        if r.succeeded() {
            return Ok(TxnOutcome {
                succeeded: true,
                revision,
                current: Vec::new(),
            });
        }
        let current = r
            .op_responses()
            .into_iter()
            .map(|resp| match resp {
                ec::TxnOpResponse::Get(g) => g.kvs().first().map(convert),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome {
            succeeded: false,
            revision,
            current,
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, KvError> {
        let start = if from > 0 {
            from
        } else {
            self.current_revision().await? + 1
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut client = self.client.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut next = start;
            let mut backoff = Duration::from_millis(50);
            loop {
                match pump(&mut client, &prefix, next, &tx).await {
                    Ok(_) => return,
                    Err((resume, err)) => {
                        if tx.is_closed() {
                            return;
                        }
                        if resume > next {
                            backoff = Duration::from_millis(50);
                        }
                        next = resume;
                        tracing::warn!(prefix, resume_from = next, error = ?err, "etcd watch interrupted; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, KvError> {
        Ok(self
            .client
            .clone()
            .lease_grant(ttl_secs, None)
            .await
            .map_err(unavailable)?
            .id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        let not_found = |e: ec::Error| {
            if e.to_string().contains("not found") {
                KvError::LeaseNotFound(lease)
            } else {
                unavailable(e)
            }
        };
        let (mut keeper, mut stream) = self
            .client
            .clone()
            .lease_keep_alive(lease)
            .await
            .map_err(not_found)?;
        keeper.keep_alive().await.map_err(not_found)?;
        match stream.message().await.map_err(not_found)? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(KvError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("lease not found") => {
                Err(KvError::LeaseNotFound(lease))
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}
