//! ModelInfer straight to `modelmesh runtime` vs through the mesh sidecar in front of it (model
//! loaded), same client, same run: the mesh's added latency and its throughput ratio. All
//! three processes (runtime, adapter, sidecar) are started here, as in a serving pod.

use super::load::{Header, ThroughputFlags, concurrent, open_loop, sequential};
use super::mgmt::{register_loaded, wait_mesh};
use super::pod::start_pod;
use super::procs::{channel, example_request, large_request, wait_ready};
use super::procstat::tree_usage;
use super::stats::{Summary, us};
use anyhow::bail;
use modelmesh_proto::inference as pb;
use std::path::PathBuf;
use std::time::Duration;

/// Request sizes.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum Payload {
    /// The example's own input (`--model`; tiny-regression: 4 floats).
    Small,
    /// A 1 MiB FP32 tensor (raw bytes) to the `vector-sum` example, which answers one float.
    Large,
}

/// Flags of the scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Example model to serve (a directory of examples/models/repository); `--payload large`
    /// always uses vector-sum.
    #[arg(long, default_value = "tiny-regression")]
    model: String,
    /// Request size: the example's small input, or a 1 MiB tensor.
    #[arg(long, value_enum, default_value_t = Payload::Small)]
    payload: Payload,
    /// Sequential requests for the latency run.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    #[command(flatten)]
    load: ThroughputFlags,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The sidecar's async worker threads (default: the sidecar's own default, 1).
    #[arg(long)]
    sidecar_threads: Option<usize>,
    /// Sidecar to runtime over a Unix-domain socket instead of loopback TCP.
    #[arg(long)]
    uds: bool,
    /// Skip the nginx `grpc_pass` baseline (run when `nginx` is installed).
    #[arg(long)]
    no_nginx: bool,
    /// Also measure an open loop at this many requests per second for --seconds (0: skip),
    /// latency counted from each request's scheduled time (no coordinated omission).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

struct Run {
    seq: Summary,
    conc: Summary,
    open: Option<super::load::OpenLoop>,
}

impl Run {
    /// Requests answered in the run, warm-up included (for CPU per request).
    fn requests(&self) -> usize {
        WARMUP + self.seq.ok + self.conc.ok + self.open.as_ref().map_or(0, |o| o.summary.ok)
    }
}

/// Requests sent before measuring.
const WARMUP: usize = 300;

async fn measure(
    port: u16,
    req: &pb::ModelInferRequest,
    header: Header,
    a: &Args,
) -> anyhow::Result<Run> {
    let ch = channel(port)?;
    sequential(&ch, req, WARMUP, &header).await;
    let seq = sequential(&ch, req, a.requests, &header).await;
    let conc = concurrent(&ch, req, a.load.concurrency, a.load.duration(), &header).await;
    if seq.errors + conc.errors > 0 {
        bail!("{} requests failed", seq.errors + conc.errors);
    }
    let open = if a.rate > 0 {
        Some(open_loop(&ch, req, a.rate, a.load.duration(), &header).await)
    } else {
        None
    };
    Ok(Run { seq, conc, open })
}

/// Runs the scenario.
pub async fn run(mut a: Args) -> anyhow::Result<()> {
    let (root, repo, work) = super::procs::bench_dirs(&a.root, "mesh")?;
    if a.payload == Payload::Large {
        a.model = "vector-sum".into();
    }
    // Fails early (before starting anything) if the example is not usable.
    let mut req = match a.payload {
        Payload::Small => example_request(&root, &a.model)?,
        Payload::Large => large_request(),
    };
    let threads = a.sidecar_threads.map(|n| n.to_string());
    let socket = work
        .join("pod")
        .join(super::pod::RUNTIME_SOCKET)
        .display()
        .to_string();
    let mut extra = vec!["--internal-port", "0"];
    if let Some(n) = &threads {
        extra.extend(["--worker-threads", n.as_str()]);
    }
    if a.uds {
        extra.extend(["--internal-serving-grpc-socket", socket.as_str()]);
    }
    let mut pod = start_pod(&work, "pod", "memory", &repo, &extra)?;
    let (rp, mp) = (pod.runtime_port, pod.grpc);
    wait_ready(&mut pod.runtime, Duration::from_secs(30)).await?;
    let mut mgmt = wait_mesh(mp, Duration::from_secs(60)).await?;
    let id = "bench-model";
    register_loaded(&mut mgmt, id, &a.model).await?;
    req.model_name = id.into();
    eprintln!(
        "measuring {} sequential requests and {} loops for {} s, direct then through the mesh",
        a.requests, a.load.concurrency, a.load.seconds
    );
    let direct = measure(rp, &req, None, &a).await?;
    // The same path through a general-purpose proxy, when one is installed.
    let nginx = if !a.no_nginx && super::nginx::available() {
        let mut n = super::nginx::start(&work, rp)?;
        wait_ready(&mut n, Duration::from_secs(30)).await?;
        let before = tree_usage(n.child.id());
        let run = measure(n.port, &req, None, &a).await?;
        let cpu = (tree_usage(n.child.id()).cpu_secs - before.cpu_secs)
            / run.requests().max(1) as f64
            * 1e6;
        Some((run, cpu, n))
    } else {
        eprintln!("nginx not installed (apt-get install nginx-light): no proxy baseline");
        None
    };
    let before = [
        tree_usage(pod.runtime.child.id()),
        tree_usage(pod.adapter.child.id()),
        tree_usage(pod.sidecar.child.id()),
    ];
    let header: Header = Some(("mm-model-id", id.parse()?));
    let mesh = measure(mp, &req, header, &a).await?;
    let after = [
        tree_usage(pod.runtime.child.id()),
        tree_usage(pod.adapter.child.id()),
        tree_usage(pod.sidecar.child.id()),
    ];
    let per_req =
        |i: usize| (after[i].cpu_secs - before[i].cpu_secs) / mesh.requests().max(1) as f64 * 1e6;

    println!(
        "\nModelInfer {} ({:?} payload, {} bytes) through the mesh vs straight to the runtime (Rust tonic client, 2 cores shared)",
        a.model,
        a.payload,
        prost::Message::encoded_len(&req)
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} | {:>10}",
        "path", "p50", "p90", "p99", "p99.9", "req/s (c)"
    );
    let mut rows = vec![("direct", &direct), ("mesh", &mesh)];
    if let Some((n, _, _)) = &nginx {
        rows.push(("nginx", n));
    }
    for (name, r) in rows {
        println!(
            "{name:<10} {:>9} {:>9} {:>9} {:>9} | {:>10.0}",
            us(r.seq.quantile(0.5)),
            us(r.seq.quantile(0.9)),
            us(r.seq.quantile(0.99)),
            us(r.seq.quantile(0.999)),
            r.conc.throughput()
        );
    }
    if a.rate > 0 {
        println!(
            "\nopen loop at {} req/s for {} s (latency from each request's scheduled time)",
            a.rate, a.load.seconds
        );
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>8} | {:>14}",
            "path", "p50", "p90", "p99", "p99.9", "max", "failed", "send late p99"
        );
        let mut rows = vec![("direct", &direct), ("mesh", &mesh)];
        if let Some((n, _, _)) = &nginx {
            rows.push(("nginx", n));
        }
        for (name, r) in rows {
            if let Some(o) = &r.open {
                let s = &o.summary;
                println!(
                    "{name:<10} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>8} | {:>14}",
                    us(s.quantile(0.5)),
                    us(s.quantile(0.9)),
                    us(s.quantile(0.99)),
                    us(s.quantile(0.999)),
                    us(s.max()),
                    s.errors,
                    us(o.lateness.quantile(0.99))
                );
            }
        }
    }
    let added = |r: &Run, q: f64| {
        r.seq.quantile(q).as_secs_f64() * 1e6 - direct.seq.quantile(q).as_secs_f64() * 1e6
    };
    println!(
        "\nmesh added latency: p50 {:.0} µs, p99 {:.0} µs",
        added(&mesh, 0.5),
        added(&mesh, 0.99)
    );
    println!(
        "throughput ratio (mesh / direct): {:.2}",
        mesh.conc.throughput() / direct.conc.throughput().max(1e-9)
    );
    if let Some((n, cpu, _)) = &nginx {
        println!(
            "nginx added latency: p50 {:.0} µs, p99 {:.0} µs; throughput ratio (nginx / direct): {:.2}; nginx CPU per request {:.0} µs",
            added(n, 0.5),
            added(n, 0.99),
            n.conc.throughput() / direct.conc.throughput().max(1e-9),
            cpu
        );
        // A ratio only means something when nginx's own overhead is above the noise.
        let ratio = |q: f64| {
            let n = added(n, q);
            if n > 10.0 {
                format!("{:.2}", added(&mesh, q) / n)
            } else {
                "n/a (nginx overhead within noise)".to_string()
            }
        };
        println!(
            "mesh overhead / nginx overhead: p50 {}, p99 {}",
            ratio(0.5),
            ratio(0.99)
        );
    }
    println!(
        "CPU per request through the mesh: sidecar {:.0} µs, runtime {:.0} µs, adapter {:.0} µs; sidecar peak RSS {:.1} MiB",
        per_req(2),
        per_req(0),
        per_req(1),
        after[2].peak_rss as f64 / (1 << 20) as f64
    );
    drop(nginx);
    drop(pod);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
