//! `modelmesh chat`: a chat with an LLM through the mesh's OpenAI API, each token printed as it
//! arrives (server-sent events). With `--prompt` one answer, else a conversation on stdin.

use anyhow::{Context, bail};
use std::io::{BufRead, Write};

/// Flags of `modelmesh chat`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Chat with an LLM through the mesh (OpenAI API), streaming tokens as they arrive",
    long_about = "Sends POST /v1/chat/completions with \"stream\": true to the mesh's REST port and prints \
each token as it arrives. With --prompt it answers once and exits; otherwise it reads your lines from stdin \
and keeps the conversation (an empty line or end of input stops)."
)]
pub struct Args {
    /// The vmodel (Predictor name) to talk to.
    vmodel: String,
    /// One message to answer (default: read messages from stdin).
    #[arg(long, short)]
    prompt: Option<String>,
    /// The mesh's REST address.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    /// Tokens to generate at most per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature (0: the most likely token each time).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
}

/// Runs the chat.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}/v1/chat/completions", a.url.trim_end_matches('/'));
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    if let Some(p) = &a.prompt {
        messages.push(serde_json::json!({"role": "user", "content": p}));
        answer(&http, &url, &a, &messages).await?;
        return Ok(());
    }
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(serde_json::json!({"role": "user", "content": line.trim_end()}));
        let reply = answer(&http, &url, &a, &messages).await?;
        messages.push(serde_json::json!({"role": "assistant", "content": reply}));
    }
}

/// Streams one answer to stdout; returns its text.
async fn answer(
    http: &reqwest::Client,
    url: &str,
    a: &Args,
    messages: &[serde_json::Value],
) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "model": a.vmodel,
        "messages": messages,
        "stream": true,
        "max_tokens": a.max_tokens,
        "temperature": a.temperature,
    });
    let mut resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach the mesh at {url} (is `modelmesh up` running?)"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("{status}: {}", error_message(&text));
    }
    let mut text = String::new();
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = resp.chunk().await.context("the answer broke off")? {
        pending.extend_from_slice(&chunk);
        // Events end with a blank line; a chunk may hold part of one.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                if v.get("error").is_some() {
                    bail!("the answer failed: {}", error_message(data));
                }
                if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    print!("{t}");
                    out.flush()?;
                    text.push_str(t);
                }
            }
        }
    }
    println!();
    Ok(text)
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_string())
}
