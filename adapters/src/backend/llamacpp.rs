//! llama.cpp's `llama-server` in router mode (started with `--models-dir` and no `-m`): a
//! multi-model server for GGUF files over HTTP, one child process per loaded model. Its loads
//! and unloads answer at once and finish later, so both poll `GET /models` until the model's
//! state settles. Run it with `--models-max 0`: the mesh decides evictions.

use super::ModelServer;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// How often a pending load or unload is looked at: first after `POLL_FIRST`, the wait
/// doubling up to `POLL_MAX`. A small model loads or stops in tens of milliseconds, and a
/// cache miss waits for both; a fixed 50 ms added up to 100 ms to every miss.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long an unload may take before it counts as failed.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read from the router's management routes.
const MAX_ANSWER: usize = 16 << 20;

/// Sleeps `wait`; the next wait.
async fn backoff(wait: Duration) -> Duration {
    tokio::time::sleep(wait).await;
    (wait * 2).min(POLL_MAX)
}

/// A `llama-server` router.
#[derive(Debug, Clone)]
pub struct LlamaCpp {
    base: String,
    http: reqwest::Client,
    load_timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    status: Option<EntryStatus>,
    #[serde(default)]
    meta: Option<Meta>,
}

/// `status` is an object in router builds (`{"value": "loaded", "failed": true, ...}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EntryStatus {
    Object {
        value: String,
        #[serde(default)]
        failed: bool,
        #[serde(default)]
        exit_code: Option<i64>,
    },
    Plain(String),
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(default)]
    n_ctx: Option<u64>,
}

/// Where a model stands in the router.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Loaded,
    Loading,
    Unloaded,
    Failed(Option<i64>),
    Other(String),
}

impl Entry {
    fn state(&self) -> State {
        match &self.status {
            None => State::Unloaded,
            Some(EntryStatus::Plain(v)) => State::from_value(v, false, None),
            Some(EntryStatus::Object {
                value,
                failed,
                exit_code,
            }) => State::from_value(value, *failed, *exit_code),
        }
    }
}

impl State {
    fn from_value(v: &str, failed: bool, exit_code: Option<i64>) -> State {
        match v {
            "loaded" => State::Loaded,
            "loading" | "downloading" => State::Loading,
            "unloaded" if failed => State::Failed(exit_code),
            "unloaded" => State::Unloaded,
            other => State::Other(other.to_string()),
        }
    }
}

/// The router's error text from an error answer (`{"error": {"message": ...}}`).
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

impl LlamaCpp {
    /// A client of the router at `http://host:port`; loads time out after `load_timeout`.
    pub fn new(host: &str, port: u16, load_timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            // The router is on this host; a proxy from the environment must not see its traffic.
            .no_proxy()
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(LlamaCpp {
            base: format!("http://{host}:{port}"),
            http,
            load_timeout,
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> Status {
        Status::unavailable(format!("llama-server at {} not reachable: {e}", self.base))
    }

    /// Reads an answer's body, at most [`MAX_ANSWER`] bytes.
    async fn text(&self, resp: reqwest::Response) -> Result<String, Status> {
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(Status::internal("llama-server's answer is too large"));
        }
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if bytes.len() > MAX_ANSWER {
            return Err(Status::internal("llama-server's answer is too large"));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET /models` (with `reload`: after the models directory changed).
    async fn models(&self, reload: bool) -> Result<Vec<Entry>, Status> {
        let url = if reload {
            format!("{}/models?reload=1", self.base)
        } else {
            format!("{}/models", self.base)
        };
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = self.text(resp).await?;
        if !status.is_success() {
            return Err(Status::unavailable(format!(
                "llama-server answered GET /models with {status}: {}",
                error_message(&body)
            )));
        }
        let list: ModelList = serde_json::from_str(&body).map_err(|e| {
            Status::internal(format!(
                "llama-server's model list is not what router mode answers ({e}); is it started with --models-dir and without -m?"
            ))
        })?;
        Ok(list.data)
    }

    async fn state_of(&self, id: &str) -> Result<Option<(State, Option<u64>)>, Status> {
        Ok(self
            .models(false)
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| {
                let n_ctx = e.meta.as_ref().and_then(|m| m.n_ctx);
                (e.state(), n_ctx)
            }))
    }

    /// `POST /models/<op>` for `id`: the HTTP status and the router's message.
    async fn post(&self, op: &str, id: &str) -> Result<(reqwest::StatusCode, String), Status> {
        let resp = self
            .http
            .post(format!("{}/models/{op}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "model": id }).to_string())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = self.text(resp).await?;
        Ok((status, error_message(&body)))
    }
}

#[tonic::async_trait]
impl ModelServer for LlamaCpp {
    async fn ready(&self) -> Result<bool, Status> {
        let resp = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(resp.status().is_success())
    }

    async fn version(&self) -> Result<String, Status> {
        let resp = self
            .http
            .get(format!("{}/props", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let body = self.text(resp).await?;
        Ok(serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("build_info")?
                    .as_str()
                    .map(|s| format!("llama.cpp {s}"))
            })
            .unwrap_or_default())
    }

    async fn load(&self, model_id: &str) -> Result<(), Status> {
        // The router lists its models directory once; the file was just linked into it.
        let listed = self.models(true).await?;
        if !listed.iter().any(|e| e.id == model_id) {
            return Err(Status::not_found(format!(
                "llama-server does not list model '{model_id}' after rescanning its models directory (is --models-dir the adapter's layout directory?)"
            )));
        }
        let (status, msg) = self.post("load", model_id).await?;
        if !status.is_success() && !msg.contains("already running") {
            return Err(Status::internal(format!(
                "llama-server refused to load '{model_id}' ({status}): {msg}"
            )));
        }
        let deadline = Instant::now() + self.load_timeout;
        let mut wait = POLL_FIRST;
        loop {
            match self.state_of(model_id).await? {
                Some((State::Loaded, _)) => return Ok(()),
                Some((State::Failed(code), _)) => {
                    let code = code.map(|c| format!(" with code {c}")).unwrap_or_default();
                    return Err(Status::internal(format!(
                        "llama-server could not load model '{model_id}': its model process exited{code} (a damaged GGUF file, an architecture this llama.cpp does not know, or not enough memory; the runtime's log says which)"
                    )));
                }
                Some((State::Unloaded, _)) => {
                    return Err(Status::internal(format!(
                        "llama-server stopped loading model '{model_id}' before it was ready"
                    )));
                }
                None => {
                    return Err(Status::not_found(format!(
                        "model '{model_id}' left llama-server's list while loading"
                    )));
                }
                Some((State::Loading | State::Other(_), _)) => {}
            }
            if Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "llama-server did not finish loading '{model_id}' within {:?}",
                    self.load_timeout
                )));
            }
            wait = backoff(wait).await;
        }
    }

    async fn unload(&self, model_id: &str) -> Result<(), Status> {
        let (status, msg) = self.post("unload", model_id).await?;
        if !status.is_success() {
            if msg.contains("not found") || msg.contains("not running") {
                return Err(Status::not_found(format!(
                    "llama-server has no running model '{model_id}'"
                )));
            }
            return Err(Status::internal(format!(
                "llama-server refused to unload '{model_id}' ({status}): {msg}"
            )));
        }
        // The memory is free only once its process is gone.
        let deadline = Instant::now() + UNLOAD_TIMEOUT;
        let mut wait = POLL_FIRST;
        loop {
            match self.state_of(model_id).await? {
                None | Some((State::Unloaded | State::Failed(_), _)) => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "llama-server did not finish unloading '{model_id}' within {UNLOAD_TIMEOUT:?}"
                    )));
                }
                _ => wait = backoff(wait).await,
            }
        }
    }

    async fn loaded_models(&self) -> Result<Vec<String>, Status> {
        Ok(self
            .models(false)
            .await?
            .into_iter()
            .filter(|e| matches!(e.state(), State::Loaded | State::Loading))
            .map(|e| e.id)
            .collect())
    }

    fn unload_means_absent(&self, code: Code) -> bool {
        code == Code::NotFound
    }

    async fn context_tokens(&self, model_id: &str) -> Option<u64> {
        self.state_of(model_id)
            .await
            .ok()
            .flatten()
            .and_then(|(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_router_states() {
        let list: ModelList = serde_json::from_str(
            r#"{"object":"list","data":[
              {"id":"a","status":{"value":"loaded"},"meta":{"n_ctx":512}},
              {"id":"b","status":{"value":"unloaded","failed":true,"exit_code":1}},
              {"id":"c","status":{"value":"loading"}},
              {"id":"d","status":"unloaded"},
              {"id":"e"}]}"#,
        )
        .expect("parses");
        let states: Vec<State> = list.data.iter().map(Entry::state).collect();
        assert_eq!(
            states,
            vec![
                State::Loaded,
                State::Failed(Some(1)),
                State::Loading,
                State::Unloaded,
                State::Unloaded
            ]
        );
        assert_eq!(list.data[0].meta.as_ref().and_then(|m| m.n_ctx), Some(512));
    }

    #[test]
    fn error_text_from_the_routers_json() {
        assert_eq!(
            error_message(r#"{"error":{"code":400,"message":"model is not running"}}"#),
            "model is not running"
        );
        assert_eq!(error_message("plain"), "plain");
    }
}
