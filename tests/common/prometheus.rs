//! A real Prometheus server for the metrics suites: Debian's `prometheus` on 127.0.0.1,
//! scraping one target every second, queried through its HTTP API. Killed on drop.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::free_port;

/// GET `url` with curl (5 s limit); the body, or empty.
pub fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: bpfman\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !curl(&format!("http://127.0.0.1:{port}/-/ready")).contains("Ready") {
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// The instant vector of `query`: (labels, value) per series.
    pub fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-G",
                "--data-urlencode",
                &format!("query={query}"),
                &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            ])
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let val = r["value"][1]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(f64::NAN);
                        (r["metric"].clone(), val)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `query` has a series whose value satisfies `ok`; returns that value.
    pub fn wait_for(&self, query: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.query(query);
            if let Some((_, v)) = r.iter().find(|(_, v)| ok(*v)) {
                return *v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: Prometheus never saw it within 20 s; `{query}` = {r:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
