//! `modelmesh bench llm`: token streaming through the mesh vs straight to llama.cpp's router, in
//! one run: `modelmesh up` with its LLM instance, the same streaming chat sent alternately to
//! the mesh's OpenAI API (the REST port of the ONNX instance, so every call crosses the
//! internal hop, as it does in a cluster) and to the router's own port, and once more with the
//! mesh entered at the LLM instance itself (the pod holding the copy), and through nginx in front
//! of the router when it is installed (a general-purpose proxy's cost). Measures time to first
//! token, the gap between tokens, the tokens per second of concurrent streams, and the time to
//! answer a model that is not loaded vs the router's own load and first answer.

use super::cpus;
use super::procs::free_port;
use super::procstat;
use super::stats::{Summary, us};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of `modelmesh bench llm`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// llama.cpp's llama-server (router mode).
    #[arg(long, default_value = "target/peers/llama/llama-server")]
    llama_server: PathBuf,
    /// Directory with alpha.gguf, beta.gguf, gamma.gguf (scripts/peers/make_tiny_gguf.py).
    #[arg(long, default_value = "target/peers/llm-models")]
    models: PathBuf,
    /// Streams per side for the first-token and inter-token figures.
    #[arg(long, default_value_t = 40)]
    requests: usize,
    /// Tokens per stream.
    #[arg(long, default_value_t = 64)]
    tokens: u32,
    /// Concurrent streams for the throughput figure.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Cache-miss samples per side.
    #[arg(long, default_value_t = 5)]
    misses: usize,
    /// Threads per model process (llama.cpp's `--threads`, passed as LLAMA_ARG_THREADS; 0:
    /// llama.cpp's default, one per core). Both sides share the same server, so this only
    /// says whether the relay gets a core of its own: on a small machine the model's threads
    /// wait for each other at every step, so any other work on their cores slows every token.
    #[arg(long, default_value_t = 0)]
    model_threads: u32,
    /// Skip the nginx baseline (`proxy_pass`, buffering off; run when `nginx` is installed).
    #[arg(long)]
    no_nginx: bool,
    /// The mesh's async worker threads (`up --worker-threads`); 1 is the sidecar's default in
    /// a pod.
    #[arg(long, default_value_t = 1)]
    mesh_threads: usize,
    /// Give llama.cpp's router and its model processes the last N cores and everything else
    /// (this client, the mesh, nginx) the others, as in a pod where the runtime container's CPU
    /// limit is its own and the sidecar has its own CPU; the model gets N threads unless
    /// --model-threads says otherwise. Default: half the cores (1 of 2). 0: every process
    /// shares every core (the model's threads then wait for each other whenever anything else
    /// runs).
    #[arg(long)]
    runtime_cores: Option<usize>,
    /// The `modelmesh` binary whose `up` is measured (default: this one), for an A/B of two
    /// builds with the same client.
    #[arg(long)]
    mesh_bin: Option<PathBuf>,
}

/// `modelmesh up`, stopped with SIGTERM (so it stops its llama-server) when dropped.
struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stream's timings.
struct Streamed {
    first: Duration,
    gaps: Vec<Duration>,
    tokens: usize,
}

async fn stream(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    tokens: u32,
) -> anyhow::Result<Streamed> {
    let body = serde_json::json!({
        "model": model, "stream": true, "temperature": 0, "max_tokens": tokens, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Tell me about yourself"}],
    });
    let t0 = Instant::now();
    let mut resp = http
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "{}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let (mut first, mut last, mut gaps, mut n) = (None, None::<Instant>, Vec::new(), 0usize);
    let mut pending = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            // A token event carries a non-null delta content.
            const TOKEN: &[u8] = b"\"delta\":{\"content\":\"";
            if event.windows(TOKEN.len()).any(|w| w == TOKEN) {
                let now = Instant::now();
                n += 1;
                match last {
                    None => first = Some(now - t0),
                    Some(l) => gaps.push(now - l),
                }
                last = Some(now);
            }
        }
    }
    Ok(Streamed {
        first: first.context("the stream carried no token")?,
        gaps,
        tokens: n,
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &http.get(url).send().await?.text().await?,
    )?)
}

async fn post_json(http: &reqwest::Client, url: &str, v: serde_json::Value) -> anyhow::Result<()> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(v.to_string())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    Ok(())
}

/// Polls the router until `id` is in `state`.
async fn router_state(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    state: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(http, &format!("{base}/models")).await?;
        let now = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == id);
        if now.is_some_and(|m| m["status"]["value"] == state) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id} not {state} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One side against the baseline: p50 and p99 of each, and what the side adds.
fn print_row(what: &str, direct: &Summary, side: &Summary) {
    let (d50, m50) = (direct.quantile(0.5), side.quantile(0.5));
    let (d99, m99) = (direct.quantile(0.99), side.quantile(0.99));
    let diff = |m: Duration, d: Duration| m.as_secs_f64() * 1e6 - d.as_secs_f64() * 1e6;
    println!(
        "{what:<22} direct p50 {:>9} p99 {:>9} | this p50 {:>9} p99 {:>9} | added p50 {:+.0} µs, p99 {:+.0} µs",
        us(d50),
        us(d99),
        us(m50),
        us(m99),
        diff(m50, d50),
        diff(m99, d99)
    );
}

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<()> {
    for n in ["alpha", "beta", "gamma"] {
        if !a.models.join(format!("{n}.gguf")).is_file() {
            bail!(
                "{}/{n}.gguf is missing: run scripts/setup-peers.sh (or make_tiny_gguf.py)",
                a.models.display()
            );
        }
    }
    if !a.llama_server.is_file() {
        bail!(
            "{} is missing: run scripts/setup-peers.sh or pass --llama-server",
            a.llama_server.display()
        );
    }
    let split = match a.runtime_cores.unwrap_or(cpus::allowed_cores().len() / 2) {
        0 => None,
        n => Some(cpus::Split::new(n)?),
    };
    // This process first: `up` and nginx inherit its cores; llama-server is moved below.
    if let Some(s) = &split {
        cpus::pin(std::process::id(), &s.front)?;
    }
    let model_threads = match (a.model_threads, &split) {
        (0, Some(s)) => s.back_cores as u32,
        (n, _) => n,
    };
    let tmp = tempfile_dir()?;
    let models = tmp.join("models");
    std::fs::create_dir_all(models.join("llm"))?;
    let preds = tmp.join("predictors");
    std::fs::create_dir_all(&preds)?;
    for n in ["alpha", "beta"] {
        std::fs::copy(
            a.models.join(format!("{n}.gguf")),
            models.join("llm").join(format!("{n}.gguf")),
        )?;
        std::fs::write(
            preds.join(format!("{n}.yaml")),
            format!(
                "apiVersion: serving.kserve.io/v1alpha1\nkind: Predictor\nmetadata:\n  name: {n}\nspec:\n  modelType:\n    name: gguf\n  storage:\n    path: llm/{n}.gguf\n"
            ),
        )?;
    }
    // `up` listens on port+1 for its second (LLM) instance: leave those free.
    let grpc = free_port()?;
    let _ = free_port()?;
    let rest = free_port()?;
    let _ = free_port()?;
    let rest_llm = rest + 1; // the LLM instance's REST port
    let log = tmp.join("up.log");
    let out = std::fs::File::create(&log)?;
    // Room for one LLM: switching between alpha and beta is a cache miss every time.
    let mesh_bin = match &a.mesh_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let child = Command::new(&mesh_bin)
        .args(["--worker-threads", &a.mesh_threads.max(1).to_string()])
        .args(["up", "--predictors"])
        .arg(&preds)
        .arg("--models")
        .arg(&models)
        .args([
            "--grpc-port",
            &grpc.to_string(),
            "--rest-port",
            &rest.to_string(),
        ])
        .arg("--llama-server")
        .arg(&a.llama_server)
        .args([
            "--llm-memory",
            "80Mi",
            "--llm-context",
            "2048",
            "--log",
            "warn",
        ])
        .envs((model_threads > 0).then(|| ("LLAMA_ARG_THREADS", model_threads.to_string())))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let up_pid = child.id();
    let mut up = Up { child };
    let deadline = Instant::now() + Duration::from_secs(120);
    let llama_port: u16 = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Ctrl-C stops")
            && let Some(p) = text
                .split("llama-server on 127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse().ok())
        {
            break p;
        }
        if up.child.try_wait()?.is_some() || Instant::now() > deadline {
            bail!("modelmesh up did not start: {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The router and any model process already started; those started later inherit it.
    if let Some(s) = &split {
        let router = cpus::children(up_pid)
            .into_iter()
            .find(|p| cpus::runs(*p, "llama-server"))
            .context("llama-server is not among modelmesh up's processes")?;
        cpus::pin_tree(router, &s.back)?;
    }
    let sides_nginx = (!a.no_nginx && super::nginx::available())
        .then(|| super::nginx::start_sse(&tmp, llama_port))
        .transpose()?;
    if sides_nginx.is_none() && !a.no_nginx {
        eprintln!("nginx not installed (apt-get install nginx-light): no proxy baseline");
    }
    let plan = Plan {
        mesh: format!("http://127.0.0.1:{rest}"),
        mesh_here: format!("http://127.0.0.1:{rest_llm}"),
        direct: format!("http://127.0.0.1:{llama_port}"),
        nginx: sides_nginx.as_ref().map(|n| n.port),
        router_dir: std::env::temp_dir()
            .join(format!("modelmesh-up-{up_pid}"))
            .join("instance-1/models/_llamacpp_models"),
        cores: match &split {
            None => "every process on every core".to_string(),
            Some(s) => format!(
                "llama-server on cores {}, the client, the mesh and nginx on {}",
                s.back, s.front
            ),
        },
        model_threads,
        up_pid,
        nginx_pid: sides_nginx.as_ref().map(|n| n.child.id()),
    };
    // The client runs on a single-threaded runtime of its own: one thread, like most LLM
    // clients, and no worker of this process's runtime waking another between requests.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let settings = a.clone();
    std::thread::spawn(move || {
        let done = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(measure(&settings, &plan)));
        let _ = tx.send(done);
    });
    let result = rx
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the measuring thread panicked")));
    drop(sides_nginx);
    drop(up);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Where the sides listen.
struct Plan {
    mesh: String,
    mesh_here: String,
    direct: String,
    nginx: Option<u16>,
    /// The router's models directory (the cache-miss baseline puts its own model there).
    router_dir: PathBuf,
    cores: String,
    model_threads: u32,
    /// The mesh's process (`up`) and nginx's, whose CPU per relayed token is measured.
    up_pid: u32,
    nginx_pid: Option<u32>,
}

/// The measurements, every side in turn.
async fn measure(a: &Args, plan: &Plan) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let status = get_json(&http, &format!("{}/_modelmesh/status", plan.mesh)).await?;
    let id_of = |vm: &str| -> anyhow::Result<String> {
        status["vmodels"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["vmodel"] == vm)
            .and_then(|v| v["active"].as_str())
            .map(str::to_owned)
            .context("vmodel missing from the status")
    };
    let alpha = id_of("alpha")?;
    println!(
        "modelmesh bench llm: {} streams of {} tokens per side, alternating; mesh = REST port of the ONNX instance, one internal hop to the LLM instance; mesh, no hop = REST port of the LLM instance; nginx = proxy_pass in front of the router; model threads: {}; mesh threads: {}; {}",
        a.requests,
        a.tokens,
        match plan.model_threads {
            0 => "llama.cpp's default".to_string(),
            n => n.to_string(),
        },
        a.mesh_threads,
        plan.cores,
    );
    // The sides, each (label, base URL, model id); the first is the baseline.
    let mut sides = vec![
        ("direct", plan.direct.clone(), alpha.clone()),
        ("mesh", plan.mesh.clone(), "alpha".to_string()),
        ("mesh, no hop", plan.mesh_here.clone(), "alpha".to_string()),
    ];
    if let Some(port) = plan.nginx {
        wait_port(port).await?;
        sides.push(("nginx", format!("http://127.0.0.1:{port}"), alpha.clone()));
    }
    // The mesh loads alpha on its first request; then every path is warmed.
    stream(&http, &plan.mesh, "alpha", 8).await?;
    for (name, base, model) in &sides {
        stream(&http, base, model, 8)
            .await
            .with_context(|| format!("a first stream through {name}"))?;
    }
    let z = Duration::ZERO;
    let (mut first, mut gaps) = (vec![Vec::new(); sides.len()], vec![Vec::new(); sides.len()]);
    for _ in 0..a.requests {
        for (i, (_, base, model)) in sides.iter().enumerate() {
            let s = stream(&http, base, model, a.tokens).await?;
            first[i].push(s.first);
            gaps[i].extend(s.gaps);
        }
    }
    let first: Vec<Summary> = first.into_iter().map(|v| Summary::new(v, 0, z)).collect();
    let gaps: Vec<Summary> = gaps.into_iter().map(|v| Summary::new(v, 0, z)).collect();
    for (what, got) in [("time to first token", &first), ("inter-token gap", &gaps)] {
        println!("{what}");
        for (i, (name, _, _)) in sides.iter().enumerate().skip(1) {
            print_row(&format!("  {name}"), &got[0], &got[i]);
        }
    }
    // Concurrent streams: tokens per second over `ROUNDS` rounds, the sides taking turns
    // within each round; the ratio is the median of the rounds' ratios (one round is a fraction
    // of a second, so a single round's figure swings by ±10 % here).
    // The relay's CPU per token: the mesh's process for the mesh sides, nginx's for nginx.
    const ROUNDS: usize = 12;
    let mut rates = vec![Vec::new(); sides.len()];
    let (mut relay_ns, mut relayed) = (vec![0u64; sides.len()], vec![0usize; sides.len()]);
    for _ in 0..ROUNDS {
        for (i, (name, base, model)) in sides.iter().enumerate() {
            let relay = match *name {
                "nginx" => plan.nginx_pid,
                _ => Some(plan.up_pid),
            };
            let cpu0 = relay.map(procstat::cpu_ns);
            let t0 = Instant::now();
            let runs = (0..a.concurrency).map(|_| stream(&http, base, model, a.tokens * 2));
            let done = futures::future::try_join_all(runs).await?;
            let n: usize = done.iter().map(|s| s.tokens).sum();
            rates[i].push(n as f64 / t0.elapsed().as_secs_f64());
            if let (Some(p), Some(c0)) = (relay, cpu0) {
                relay_ns[i] += procstat::cpu_ns(p).saturating_sub(c0);
                relayed[i] += n;
            }
        }
    }
    let per_token = |i: usize| relay_ns[i] as f64 / 1e3 / relayed[i].max(1) as f64;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let median_ratio = |side: &[f64]| {
        let mut r: Vec<f64> = side
            .iter()
            .zip(&rates[0])
            .map(|(s, d)| s / d.max(1e-9))
            .collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "{} concurrent streams (median of {ROUNDS} rounds): direct {:.0} tokens/s",
        a.concurrency,
        mean(&rates[0])
    );
    for (i, (name, _, _)) in sides.iter().enumerate().skip(1) {
        println!(
            "  {name:<20} {:.0} tokens/s, ratio {:.3}, relay CPU {:.1} µs per token",
            mean(&rates[i]),
            median_ratio(&rates[i]),
            per_token(i)
        );
    }
    println!(
        "  (the mesh's process at rest while direct streams ran: {:.1} µs per direct token)",
        per_token(0)
    );
    // Cache miss: the mesh answering a model it must load (room for one: alpha and beta take
    // turns), vs the router loading a model of its own directory and answering.
    let mut miss = Vec::new();
    for i in 0..a.misses {
        let vm = if i % 2 == 0 { "beta" } else { "alpha" };
        miss.push(stream(&http, &plan.mesh, vm, 4).await?.first);
    }
    let direct = &plan.direct;
    std::fs::copy(
        a.models.join("gamma.gguf"),
        plan.router_dir.join("bench-direct.gguf"),
    )
    .with_context(|| format!("copying into {}", plan.router_dir.display()))?;
    get_json(&http, &format!("{direct}/models?reload=1")).await?;
    let mut own = Vec::new();
    for _ in 0..a.misses {
        let t0 = Instant::now();
        post_json(
            &http,
            &format!("{direct}/models/load"),
            serde_json::json!({"model": "bench-direct"}),
        )
        .await?;
        router_state(&http, direct, "bench-direct", "loaded").await?;
        stream(&http, direct, "bench-direct", 4).await?;
        own.push(t0.elapsed());
        post_json(
            &http,
            &format!("{direct}/models/unload"),
            serde_json::json!({"model": "bench-direct"}),
        )
        .await?;
        router_state(&http, direct, "bench-direct", "unloaded").await?;
    }
    let (miss, own) = (Summary::new(miss, 0, z), Summary::new(own, 0, z));
    println!(
        "cache miss             router's own load + first token p50 {} | mesh (evict, load, first token) p50 {} | ratio {:.2}",
        us(own.quantile(0.5)),
        us(miss.quantile(0.5)),
        miss.quantile(0.5).as_secs_f64() / own.quantile(0.5).as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Waits until something listens on `port`.
async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("modelmesh-bench-llm-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
