//! Image benchmark: loading a program from a cached image versus from a file on disk,
//! and pulling from a registry on 127.0.0.1 (Debian's docker-registry), through the real
//! daemon over gRPC. Run as root: `cargo bench --bench images`. Prints Markdown.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_api::v1::{self, bpfman_client::BpfmanClient};
use tonic::transport::{Channel, Endpoint};

mod common;

use common::{BPFMAN, BenchDaemon, object};

const N: usize = 60;

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.9))
}

/// The registry process and its storage (removed on drop).
struct Registry(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry() -> (Registry, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (apt install docker-registry)");
    let t = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "registry did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (Registry(child, dir), addr)
}

fn request(location: v1::bytecode_location::Location) -> v1::LoadRequest {
    v1::LoadRequest {
        bytecode: Some(v1::BytecodeLocation {
            location: Some(location),
        }),
        info: vec![v1::LoadInfo {
            name: "xdp_count_pass".into(),
            program_type: v1::BpfmanProgramType::Xdp as i32,
            info: None,
        }],
        ..Default::default()
    }
}

fn bytecode_image(url: &str, policy: i32) -> v1::BytecodeImage {
    v1::BytecodeImage {
        url: url.into(),
        image_pull_policy: policy,
        username: None,
        password: None,
    }
}

fn image(url: &str, policy: i32) -> v1::bytecode_location::Location {
    v1::bytecode_location::Location::Image(bytecode_image(url, policy))
}

/// One `PullBytecode` with policy Always; its duration.
async fn pull_always(c: &mut BpfmanClient<Channel>, url: &str) -> Duration {
    let t = Instant::now();
    c.pull_bytecode(v1::PullBytecodeRequest {
        image: Some(bytecode_image(url, 0)),
    })
    .await
    .expect("pull");
    t.elapsed()
}

async fn load_unload(c: &mut BpfmanClient<Channel>, req: v1::LoadRequest) -> Duration {
    let t = Instant::now();
    let r = c.load(req).await.expect("load").into_inner();
    let took = t.elapsed();
    let id = r.programs[0].kernel_info.as_ref().expect("kernel info").id;
    c.unload(v1::UnloadRequest { id }).await.expect("unload");
    took
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let obj = object("xdp_test.bpf.o");
    let (_reg, addr) = registry();
    let layout = tempfile::tempdir().expect("tempdir");
    let url = format!("{addr}/bench/xdp:v1");
    for args in [
        vec!["image", "build", "-b", &obj, "-t", &url],
        vec!["image", "push", &url],
    ] {
        let st = Command::new(BPFMAN)
            .args(&args)
            .env("BPFMAN_IMAGE_DIR", layout.path())
            .stdout(Stdio::null())
            .status()
            .expect("bpfman");
        assert!(st.success(), "bpfman {}", args.join(" "));
    }
    let d =
        BenchDaemon::start_with_config("bpfmanimg0", "[images]\ncache_dir = \"@DIR@/images\"\n");
    let ch = Endpoint::from_shared(format!("unix://{}", d.sock.display()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut c = BpfmanClient::new(ch);

    // Warm up both paths once (page cache, first kernel BTF use).
    load_unload(
        &mut c,
        request(v1::bytecode_location::Location::File(obj.clone())),
    )
    .await;
    let first_pull = pull_always(&mut c, &url).await;

    let mut file = Vec::new();
    let mut cached = Vec::new();
    let mut always = Vec::new();
    let mut pulls = Vec::new();
    for _ in 0..N {
        file.push(
            load_unload(
                &mut c,
                request(v1::bytecode_location::Location::File(obj.clone())),
            )
            .await,
        );
        cached.push(load_unload(&mut c, request(image(&url, 1))).await);
        always.push(load_unload(&mut c, request(image(&url, 0))).await);
        pulls.push(pull_always(&mut c, &url).await);
    }
    let (f50, f90) = stats(&mut file);
    let (c50, c90) = stats(&mut cached);
    let (a50, a90) = stats(&mut always);
    let (p50, p90) = stats(&mut pulls);
    println!("## Images: load from a cached image vs from a file ({N} runs each, gRPC)\n");
    println!("| operation | median ms | p90 ms |");
    println!("|---|---|---|");
    println!("| load from file (xdp_test.bpf.o, 12 KiB) | {f50:.2} | {f90:.2} |");
    println!("| load from cached image (IfNotPresent) | {c50:.2} | {c90:.2} |");
    println!("| load from image, pull policy Always (loopback registry) | {a50:.2} | {a90:.2} |");
    println!("| pull only (Always, loopback registry) | {p50:.2} | {p90:.2} |");
    println!(
        "\nFirst pull into an empty cache: {:.2} ms. Cached image overhead over a file: {:.2} ms median.",
        first_pull.as_secs_f64() * 1000.0,
        c50 - f50
    );
}
