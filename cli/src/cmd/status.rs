//! `modelmesh status`: what a running `modelmesh up` serves: vmodels, models, copies, states and
//! skipped predictor files.

use anyhow::Context;

/// Flags of `modelmesh status`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Show what a running `modelmesh up` serves (vmodels, models, copies, states, invalid files)"
)]
pub struct Args {
    /// REST address of `modelmesh up`: `host:port` or a URL (`http://host:port`).
    #[arg(long, default_value = "127.0.0.1:8008")]
    rest: String,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

/// Fetches and prints the status.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let url = format!("{}/_modelmesh/status", base_url(&a.rest));
    let body = http_get(&url)
        .await
        .with_context(|| format!("is `modelmesh up` running? GET {url}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).context("status is not JSON")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<26} {:<16} {:<40} MODEL STATUS",
        "VMODEL", "STATUS", "ACTIVE MODEL"
    );
    for vm in v["vmodels"].as_array().into_iter().flatten() {
        println!(
            "{:<26} {:<16} {:<40} {}",
            vm["vmodel"].as_str().unwrap_or(""),
            vm["status"].as_str().unwrap_or(""),
            vm["active"].as_str().unwrap_or(""),
            vm["active_status"].as_str().unwrap_or("")
        );
    }
    println!(
        "\n{:<40} {:<8} {:<14} {:<6} PATH",
        "MODEL", "TYPE", "STATUS", "COPIES"
    );
    for m in v["models"].as_array().into_iter().flatten() {
        println!(
            "{:<40} {:<8} {:<14} {:<6} {}",
            m["model"].as_str().unwrap_or(""),
            m["type"].as_str().unwrap_or(""),
            m["status"].as_str().unwrap_or(""),
            m["copies"],
            m["path"].as_str().unwrap_or("")
        );
        for e in m["errors"].as_array().into_iter().flatten() {
            println!("    error: {}", e.as_str().unwrap_or(""));
        }
    }
    let c = &v["cache"];
    println!(
        "\ncache of {}: {} copies, {} of {} bytes used",
        v["instance"].as_str().unwrap_or("this instance"),
        c["copies"],
        c["used_bytes"],
        c["capacity_bytes"]
    );
    if let Some(all) = v["instances"].as_array().filter(|a| !a.is_empty()) {
        println!(
            "\n{:<34} {:<7} {:>12} {:>12}  INTERNAL ADDRESS",
            "INSTANCE", "COPIES", "USED", "CAPACITY"
        );
        for i in all {
            let mark = if i["this"].as_bool() == Some(true) {
                " (this)"
            } else {
                ""
            };
            let down = if i["shutting_down"].as_bool() == Some(true) {
                " shutting down"
            } else {
                ""
            };
            println!(
                "{:<34} {:<7} {:>12} {:>12}  {}{down}",
                format!("{}{mark}", i["instance"].as_str().unwrap_or("")),
                i["copies"],
                i["used_bytes"],
                i["capacity_bytes"],
                i["internal_address"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(errs) = v["invalid_files"].as_object().filter(|e| !e.is_empty()) {
        println!("\ninvalid predictor files (skipped):");
        for (f, e) in errs {
            println!("  {f}: {}", e.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// `http://host:port` for a `host:port`; a URL as it is, without a trailing slash.
fn base_url(rest: &str) -> String {
    let rest = rest.trim_end_matches('/');
    if rest.contains("://") {
        rest.to_string()
    } else {
        format!("http://{rest}")
    }
}

async fn http_get(url: &str) -> anyhow::Result<String> {
    let resp = reqwest::get(url).await?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {body}");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_or_a_url() {
        assert_eq!(super::base_url("127.0.0.1:8008"), "http://127.0.0.1:8008");
        assert_eq!(super::base_url("http://h:1/"), "http://h:1");
        assert_eq!(super::base_url("https://h:1"), "https://h:1");
    }
}
