//! Bytecode images end to end against a real registry (Debian's docker-registry) on
//! 127.0.0.1: build, push, sign, pull, verify, load, attach and send real packets;
//! basic auth; an image built by buildah; every bad input; IfNotPresent with the
//! registry stopped; concurrent pulls done once; multi-arch indexes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use bpfman::image::format::{
    self, Descriptor, Manifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, make_layer,
};
use bpfman::image::layout::Layout;
use common::{BPFMAN, Daemon, Netns, Registry, obj};
use serde_json::{Value, json};

macro_rules! require_registry {
    () => {
        require_root!();
        if !Registry::available() {
            eprintln!(
                "SKIP {}: docker-registry is not installed (scripts/setup.sh installs it)",
                module_path!()
            );
            return;
        }
    };
}

/// Runs a local (daemon-less) image command with `layout` as the image directory.
fn local(layout: &Path, args: &[&str]) -> Output {
    Command::new(BPFMAN)
        .args(args)
        .env("BPFMAN_IMAGE_DIR", layout)
        .env("COSIGN_PASSWORD", "test-password")
        .env("HOME", layout)
        .output()
        .expect("running bpfman")
}

fn local_ok(layout: &Path, args: &[&str]) -> String {
    let out = local(layout, args);
    assert!(
        out.status.success(),
        "bpfman {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn local_fails(layout: &Path, args: &[&str]) -> String {
    let out = local(layout, args);
    assert!(
        !out.status.success(),
        "bpfman {} should have failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Builds the XDP test object as `tag` and pushes it.
fn build_and_push(layout: &Path, tag: &str, auth: Option<&str>) {
    local_ok(
        layout,
        &["image", "build", "-b", &obj("xdp_test.bpf.o"), "-t", tag],
    );
    let mut args = vec!["image", "push", tag];
    if let Some(a) = auth {
        args.extend(["--registry-auth", a]);
    }
    local_ok(layout, &args);
}

fn image_refs(d: &Daemon) -> Vec<String> {
    d.json(&["image", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i["reference"].as_str().map(String::from))
        .collect()
}

fn load_image(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["load", "image"];
    a.extend_from_slice(args);
    match d.json(&a) {
        Value::Array(v) => v,
        other => panic!("load printed {other}"),
    }
}

#[test]
fn build_push_sign_pull_verify_load_attach_with_traffic() {
    require_registry!();
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path();
    let good = format!("{}/xdp/signed:v1", reg.addr);
    let unsigned = format!("{}/xdp/unsigned:v1", reg.addr);
    let other = format!("{}/xdp/other-key:v1", reg.addr);
    build_and_push(layout, &good, None);
    build_and_push(layout, &unsigned, None);
    build_and_push(layout, &other, None);

    // Keys in cosign's format; sign `good` with the trusted key, `other` with another.
    let k1 = layout.join("trusted");
    let k2 = layout.join("other");
    local_ok(
        layout,
        &[
            "image",
            "generate-key-pair",
            "--output-key-prefix",
            k1.to_str().unwrap(),
        ],
    );
    local_ok(
        layout,
        &[
            "image",
            "generate-key-pair",
            "--output-key-prefix",
            k2.to_str().unwrap(),
        ],
    );
    let key1 = format!("{}.key", k1.display());
    let pub1 = format!("{}.pub", k1.display());
    let key2 = format!("{}.key", k2.display());
    local_ok(layout, &["image", "sign", "--key", &key1, &good]);
    local_ok(layout, &["image", "sign", "--key", &key2, &other]);
    // The signature sits where cosign puts it: tag sha256-<digest>.sig.
    let out = local_ok(
        layout,
        &["-o", "json", "image", "verify", "--key", &pub1, &good],
    );
    let v: Value = serde_json::from_str(&out).expect("verify json");
    assert_eq!(v["verified"], true);
    let digest = v["digest"].as_str().expect("digest").to_string();
    let tags = reqwest_tags(&reg, "xdp/signed");
    assert!(
        tags.contains(&format!(
            "sha256-{}.sig",
            digest.trim_start_matches("sha256:")
        )),
        "no cosign signature tag in {tags:?}"
    );
    let e = local_fails(layout, &["image", "verify", "--key", &pub1, &other]);
    assert!(e.contains("none by the given key"), "{e}");
    let e = local_fails(layout, &["image", "verify", "--key", &pub1, &unsigned]);
    assert!(e.contains("no signatures"), "{e}");
    // A wrong password for the private key is named as such.
    let out = Command::new(BPFMAN)
        .args(["image", "sign", "--key", &key1, &good])
        .env("COSIGN_PASSWORD", "wrong")
        .output()
        .expect("bpfman");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));

    // The daemon trusts key 1 for xdp/ images: signatures are required there.
    let d = Daemon::start_with_config(&format!(
        "[images]\ncache_dir = \"@DIR@/images\"\n\
         [[images.signatures.trusted_keys]]\nprefix = \"{}/xdp/\"\nkey = \"{pub1}\"\n",
        reg.addr
    ));
    let e = d.fails(&["image", "pull", &unsigned]);
    assert!(e.contains("unsigned") && e.contains("trusted key"), "{e}");
    let e = d.fails(&["image", "pull", &other]);
    assert!(e.contains("none by a key trusted"), "{e}");
    let e = d.fails(&[
        "load",
        "image",
        "-i",
        &unsigned,
        "--programs",
        "xdp:xdp_drop_proto",
    ]);
    assert!(e.contains("unsigned"), "{e}");
    assert!(image_refs(&d).is_empty(), "refused images were cached");

    let info = d.json(&["image", "pull", &good]);
    assert_eq!(info["digest"], digest.as_str());
    assert!(
        info["signature"]
            .as_str()
            .unwrap_or("")
            .starts_with("verified"),
        "{info}"
    );
    assert_eq!(info["programs"]["xdp_drop_proto"], "xdp");
    assert_eq!(info["maps"]["xdp_drops"], "array");

    // Load from the image, attach, and watch real packets stop.
    let ns = Netns::new();
    assert!(ns.ping(), "no connectivity before attaching anything");
    let progs = load_image(&d, &["-i", &good, "--programs", "xdp:xdp_drop_proto"]);
    let id = progs[0]["id"].as_u64().expect("id") as u32;
    let got = d.json(&["get", "program", &id.to_string()]);
    assert!(got.to_string().contains(&good), "{got}");
    let link = d.attach(&[
        &id.to_string(),
        "xdp",
        "--iface",
        &ns.host_if,
        "--priority",
        "10",
    ]);
    assert!(!ns.ping(), "ping passed the image's ICMP-dropping program");
    assert!(d.map_u64(id, "xdp_drops") >= 1);
    d.json(&["detach", &link.to_string()]);
    assert!(ns.ping(), "ping still fails after detach");
    d.json(&["unload", &id.to_string()]);
    // A function the image does not hold is named.
    let e = d.fails(&["load", "image", "-i", &good, "--programs", "xdp:no_such_fn"]);
    assert!(e.contains("no program 'no_such_fn'"), "{e}");
    assert_eq!(image_refs(&d), vec![good.clone()]);
    // The cache survives a daemon restart (it lives outside the runtime dir).
    let mut d = d;
    d.stop();
    d.spawn();
    assert_eq!(image_refs(&d), vec![good.clone()]);
    let info = d.json(&["image", "inspect", &good]);
    assert_eq!(info["digest"], digest.as_str());
    d.json(&["image", "rm", &good]);
    assert!(image_refs(&d).is_empty());
}

/// Tags of a repository, read straight from the registry API.
fn reqwest_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/v2/{repo}/tags/list", reg.addr)])
        .output()
        .expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect()
}

#[test]
fn basic_auth_registry_and_credentials() {
    require_registry!();
    let reg = Registry::start_with_auth("alice", "s3cret-pw");
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path();
    let image = format!("{}/auth/xdp:v1", reg.addr);
    local_ok(
        layout,
        &["image", "build", "-b", &obj("xdp_test.bpf.o"), "-t", &image],
    );
    let e = local_fails(layout, &["image", "push", &image]);
    assert!(e.contains("401") || e.contains("refused access"), "{e}");
    local_ok(
        layout,
        &["image", "push", &image, "--registry-auth", &reg.auth_b64()],
    );

    let d = Daemon::start();
    let e = d.fails(&["image", "pull", &image]);
    assert!(e.contains("--registry-auth"), "{e}");
    let wrong = common::b64(b"alice:nope");
    let e = d.fails(&["image", "pull", &image, "--registry-auth", &wrong]);
    assert!(e.contains("refused access") || e.contains("401"), "{e}");
    let info = d.json(&["image", "pull", &image, "--registry-auth", &reg.auth_b64()]);
    assert_eq!(info["programs"]["xdp_count_pass"], "xdp");
    let progs = load_image(
        &d,
        &[
            "-i",
            &image,
            "-p",
            "Always",
            "-r",
            &reg.auth_b64(),
            "--programs",
            "xdp:xdp_count_pass",
        ],
    );
    assert_eq!(progs.len(), 1);
    let log = d.log();
    assert!(
        !log.contains("s3cret-pw"),
        "the password reached the daemon log"
    );
    let store = std::fs::read(d.runtime.join("db/store.db")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&store).contains("s3cret-pw"),
        "the password reached the store"
    );

    // A docker config.json the daemon is configured with.
    let d2 = Daemon::start_with_config(
        "[images]\ncache_dir = \"@DIR@/images\"\nauth_file = \"@DIR@/auth.json\"\n",
    );
    std::fs::write(
        d2.dir.path().join("auth.json"),
        json!({"auths": {reg.addr.clone(): {"auth": reg.auth_b64()}}}).to_string(),
    )
    .expect("auth.json");
    let info = d2.json(&["image", "pull", &image]);
    assert_eq!(info["reference"], image.as_str());
}

#[test]
fn image_built_by_buildah_with_upstream_labels_loads() {
    require_registry!();
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!(
            "SKIP image_built_by_buildah: buildah is not installed (scripts/setup.sh installs it)"
        );
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path();
    let bh = |args: &[&str]| -> String {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("buildah");
        assert!(
            out.status.success(),
            "buildah {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // As upstream's Containerfile.bytecode does: FROM scratch, the .o, the labels.
    let c = bh(&["from", "scratch"]);
    bh(&["copy", &c, &obj("xdp_test.bpf.o"), "/"]);
    bh(&[
        "config",
        "--label",
        r#"io.ebpf.programs={"xdp_drop_proto":"xdp","xdp_count_pass":"xdp"}"#,
        "--label",
        r#"io.ebpf.maps={"xdp_drops":"array"}"#,
        "--label",
        "io.ebpf.filename=xdp_test.bpf.o",
        &c,
    ]);
    bh(&["commit", &c, "bpfman-test-xdp:v1"]);
    let oci = format!("{}/buildah/xdp-oci:v1", reg.addr);
    let docker = format!("{}/buildah/xdp-docker:v1", reg.addr);
    bh(&[
        "push",
        "--tls-verify=false",
        "bpfman-test-xdp:v1",
        &format!("docker://{oci}"),
    ]);
    bh(&[
        "push",
        "--tls-verify=false",
        "--format",
        "v2s2",
        "bpfman-test-xdp:v1",
        &format!("docker://{docker}"),
    ]);
    // A legacy-label image (io.ebpf.program_type + bpf_function_name).
    let c2 = bh(&["from", "scratch"]);
    bh(&["copy", &c2, &obj("xdp_test.bpf.o"), "/"]);
    bh(&[
        "config",
        "--label",
        "io.ebpf.program_type=xdp",
        "--label",
        "io.ebpf.bpf_function_name=xdp_drop_proto",
        &c2,
    ]);
    bh(&["commit", &c2, "bpfman-test-legacy:v1"]);
    let legacy = format!("{}/buildah/xdp-legacy:v1", reg.addr);
    bh(&[
        "push",
        "--tls-verify=false",
        "bpfman-test-legacy:v1",
        &format!("docker://{legacy}"),
    ]);

    let d = Daemon::start();
    let ns = Netns::new();
    for image in [&oci, &docker, &legacy] {
        let info = d.json(&["image", "pull", image]);
        assert_eq!(info["programs"]["xdp_drop_proto"], "xdp", "{image}: {info}");
        let progs = load_image(&d, &["-i", image, "--programs", "xdp:xdp_drop_proto"]);
        let id = progs[0]["id"].as_u64().expect("id") as u32;
        let link = d.attach(&[
            &id.to_string(),
            "xdp",
            "--iface",
            &ns.host_if,
            "--priority",
            "10",
        ]);
        assert!(!ns.ping(), "{image}: ping passed the ICMP-dropping program");
        d.json(&["detach", &link.to_string()]);
        assert!(ns.ping(), "{image}: ping fails after detach");
        d.json(&["unload", &id.to_string()]);
    }
    let _ = bh(&["rm", "--all"]);
}

/// Writes a hand-made image into `layout` as `name`: `layer` (with `media_type`) and a
/// config with `labels` and `arch`.
fn craft(
    layout: &Layout,
    name: &str,
    layer: &[u8],
    media_type: &str,
    labels: BTreeMap<String, String>,
    arch: &str,
) -> String {
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [format::sha256_digest(layer)]},
    })
    .to_string()
    .into_bytes();
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::of(OCI_CONFIG, &config),
        layers: vec![Descriptor::of(media_type, layer)],
        annotations: BTreeMap::new(),
    };
    let raw = serde_json::to_vec(&m).expect("manifest");
    layout.put_blob(layer, None).expect("blob");
    layout.put_blob(&config, None).expect("blob");
    layout.put_blob(&raw, None).expect("blob");
    let lock = layout.lock().expect("lock");
    layout
        .set(&lock, name, Descriptor::of(OCI_MANIFEST, &raw))
        .expect("set");
    m.layers[0].digest.clone()
}

fn xdp_labels() -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(
        format::LABEL_PROGRAMS.into(),
        r#"{"xdp_drop_proto":"xdp"}"#.into(),
    );
    l
}

#[test]
fn bad_images_are_refused_with_clear_errors_and_nothing_cached() {
    require_registry!();
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let layout = Layout::open(dir).expect("layout");
    let elf = std::fs::read(obj("xdp_test.bpf.o")).expect("object");
    let good_layer = make_layer("prog.o", &elf).expect("layer");
    let r = |n: &str| format!("{}/bad/{n}:v1", reg.addr);
    let host = format::host_arch();

    let mut bad_digests = Vec::new();
    let mut cases: Vec<(String, &str)> = Vec::new();
    // A layer declared tar+gzip that is not gzip.
    bad_digests.push(craft(
        &layout,
        &r("not-gzip"),
        b"plain bytes, not gzip",
        OCI_LAYER_GZIP,
        xdp_labels(),
        host,
    ));
    cases.push((r("not-gzip"), "not gzip"));
    // A truncated gzip layer.
    let cut = &good_layer[..good_layer.len() / 2];
    bad_digests.push(craft(
        &layout,
        &r("truncated"),
        cut,
        OCI_LAYER_GZIP,
        xdp_labels(),
        host,
    ));
    cases.push((r("truncated"), "truncated"));
    // A layer whose file is not ELF.
    let text = make_layer("README", b"this is not an eBPF object").expect("layer");
    bad_digests.push(craft(
        &layout,
        &r("not-elf"),
        &text,
        OCI_LAYER_GZIP,
        xdp_labels(),
        host,
    ));
    cases.push((r("not-elf"), "not an ELF"));
    // Labels that are not JSON.
    let mut l = BTreeMap::new();
    l.insert(format::LABEL_PROGRAMS.into(), "xdp_drop_proto=xdp".into());
    craft(
        &layout,
        &r("labels-not-json"),
        &good_layer,
        OCI_LAYER_GZIP,
        l,
        host,
    );
    cases.push((
        r("labels-not-json"),
        "io.ebpf.programs is not a JSON object",
    ));
    // Labels naming a function the ELF lacks.
    let mut l = BTreeMap::new();
    l.insert(format::LABEL_PROGRAMS.into(), r#"{"ghost":"xdp"}"#.into());
    craft(
        &layout,
        &r("labels-missing-fn"),
        &good_layer,
        OCI_LAYER_GZIP,
        l,
        host,
    );
    cases.push((r("labels-missing-fn"), "names function 'ghost'"));
    // The wrong architecture.
    craft(
        &layout,
        &r("wrong-arch"),
        &good_layer,
        OCI_LAYER_GZIP,
        xdp_labels(),
        "riscv64-other",
    );
    cases.push((r("wrong-arch"), "built for linux/riscv64-other"));
    // The wrong byte order (EI_DATA says big endian).
    let mut be = elf.clone();
    be[5] = 2;
    let be_layer = make_layer("prog.o", &be).expect("layer");
    bad_digests.push(craft(
        &layout,
        &r("big-endian"),
        &be_layer,
        OCI_LAYER_GZIP,
        xdp_labels(),
        host,
    ));
    cases.push((r("big-endian"), "big-endian"));
    // A multi-arch index without this host's platform.
    let arm = local_ok(
        dir,
        &[
            "image",
            "build",
            "--bytecode-for",
            &format!("arm64={}", obj("xdp_test.bpf.o")),
            "-t",
            &r("arm-only"),
        ],
    );
    assert!(arm.contains("linux/arm64"), "{arm}");
    cases.push((r("arm-only"), "has no image for this host"));
    // Over the size limit: the daemon below allows 12000 bytes.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..20000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let big_layer = make_layer("prog.o", &[elf.clone(), big].concat()).expect("layer");
    bad_digests.push(craft(
        &layout,
        &r("too-big"),
        &big_layer,
        OCI_LAYER_GZIP,
        xdp_labels(),
        host,
    ));
    cases.push((r("too-big"), "over the limit"));
    // Layer and manifest damaged inside the registry after the push.
    let damaged_layer = craft(
        &layout,
        &r("damaged-layer"),
        &make_layer("p.o", &elf[..elf.len() - 1]).expect("l"),
        OCI_LAYER_GZIP,
        xdp_labels(),
        host,
    );
    bad_digests.push(damaged_layer.clone());
    cases.push((r("damaged-layer"), "does not match"));
    let small = make_layer("q.o", &elf).expect("layer");
    craft(
        &layout,
        &r("damaged-manifest"),
        &small,
        OCI_LAYER_GZIP,
        {
            let mut l = xdp_labels();
            l.insert("x".into(), "manifest-to-damage".into());
            l
        },
        host,
    );
    cases.push((r("damaged-manifest"), "digest"));

    for (name, _) in &cases {
        local_ok(dir, &["image", "push", name]);
    }
    // Flip one byte of the stored layer and of the stored manifest, keeping their size.
    let flip = |p: &Path| {
        let mut b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let i = b.len() / 2;
        b[i] ^= 0x20;
        std::fs::write(p, b).expect("write");
    };
    flip(&reg.blob_path(&damaged_layer));
    // The manifest must stay valid JSON (the registry parses it): change one hex digit.
    let dm = layout
        .find(&r("damaged-manifest"))
        .expect("find")
        .expect("entry");
    let mp = reg.blob_path(&dm.digest);
    let mut m = std::fs::read(&mp).expect("manifest blob");
    let at = m
        .windows(7)
        .position(|w| w == b"sha256:")
        .expect("a digest in the manifest")
        + 7;
    m[at] = if m[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(&mp, m).expect("write");

    let d = Daemon::start_with_config(
        "[images]\ncache_dir = \"@DIR@/images\"\nmax_image_size = 12000\n",
    );
    for (name, want) in &cases {
        let e = d.fails(&["image", "pull", name]);
        assert!(
            e.contains(want),
            "pulling {name}: expected '{want}' in: {e}"
        );
    }
    // Registry problems: unknown host, nothing listening, missing tag.
    let e = d.fails(&["image", "pull", "registry.invalid/x/y:v1"]);
    assert!(e.contains("cannot reach registry"), "{e}");
    let e = d.fails(&[
        "image",
        "pull",
        &format!("127.0.0.1:{}/x/y:v1", common::free_port()),
    ]);
    assert!(e.contains("cannot reach registry"), "{e}");
    let e = d.fails(&[
        "image",
        "pull",
        &format!("{}/bad/not-gzip:missing-tag", reg.addr),
    ]);
    assert!(e.contains("is not in registry"), "{e}");
    let e = d.fails(&["image", "pull", "Not A Reference"]);
    assert!(e.contains("not a valid image reference"), "{e}");

    // Nothing that failed was cached, and the daemon still serves.
    assert!(image_refs(&d).is_empty(), "{:?}", image_refs(&d));
    for dg in &bad_digests {
        let p = d
            .dir
            .path()
            .join("images/blobs/sha256")
            .join(dg.trim_start_matches("sha256:"));
        assert!(
            !p.exists(),
            "a blob that failed verification was cached: {dg}"
        );
    }
    d.json(&["system", "info"]);
}

#[test]
fn if_not_present_works_with_the_registry_stopped_and_pulls_are_shared() {
    require_registry!();
    let mut reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let image = format!("{}/xdp/cached:v1", reg.addr);
    build_and_push(work.path(), &image, None);
    // The delay keeps the first fetch running while the other seven arrive.
    let d = Daemon::start_with("", &[("BPFMAN_TEST_PULL_DELAY_MS", "1500")]);

    // Eight concurrent pulls of one image (policy Always) fetch its layer once.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let sock = d.socket.clone();
            let image = image.clone();
            std::thread::spawn(move || {
                Command::new(BPFMAN)
                    .args(["-o", "json", "image", "pull", &image])
                    .env("BPFMAN_SOCKET", sock)
                    .output()
                    .expect("bpfman")
            })
        })
        .collect();
    let mut digests = Vec::new();
    for h in handles {
        let out = h.join().expect("thread");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        digests.push(v["bytecode_digest"].as_str().unwrap_or("").to_string());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    let info = d.json(&["image", "inspect", &image]);
    let layer_gets = reg
        .log()
        .lines()
        .filter(|l| l.contains("GET /v2/xdp/cached/blobs/") && l.contains("\" 200 "))
        .count();
    assert_eq!(
        layer_gets,
        2,
        "8 concurrent pulls should fetch config and layer once each; registry log:\n{}",
        reg.log()
    );

    reg.stop();
    let progs = load_image(
        &d,
        &[
            "-i",
            &image,
            "-p",
            "IfNotPresent",
            "--programs",
            "xdp:xdp_count_pass",
        ],
    );
    assert_eq!(progs.len(), 1, "IfNotPresent failed with the registry down");
    let e = d.fails(&[
        "load",
        "image",
        "-i",
        &image,
        "-p",
        "Always",
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    assert!(e.contains("cannot reach registry"), "{e}");
    d.json(&[
        "image",
        "rm",
        info["manifest_digest"].as_str().unwrap_or(""),
    ]);
    let e = d.fails(&[
        "load",
        "image",
        "-i",
        &image,
        "-p",
        "Never",
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    assert!(e.contains("not in the cache"), "{e}");
    // The loaded program does not depend on the cache.
    let id = progs[0]["id"].as_u64().expect("id");
    d.json(&["get", "program", &id.to_string()]);
}

#[test]
fn multi_arch_index_picks_this_host() {
    require_registry!();
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let image = format!("{}/xdp/multi:v1", reg.addr);
    let o = obj("xdp_test.bpf.o");
    let out = local_ok(
        dir,
        &[
            "-o",
            "json",
            "image",
            "build",
            "--bytecode-for",
            &format!("{}={o}", format::host_arch()),
            "--bytecode-for",
            &format!("arm64={o}"),
            "-t",
            &image,
        ],
    );
    let built: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(built["platforms"].as_array().map(|p| p.len()), Some(2));
    local_ok(dir, &["image", "push", &image]);
    let d = Daemon::start();
    let info = d.json(&["image", "pull", &image]);
    assert_eq!(info["digest"], built["digest"]);
    assert_ne!(
        info["digest"], info["manifest_digest"],
        "the index itself was taken as the manifest"
    );
    let progs = load_image(&d, &["-i", &image, "--programs", "xdp:xdp_count_pass"]);
    assert_eq!(progs.len(), 1);
}
