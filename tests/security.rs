//! Hostile tenants: one test per finding of the security review (F1 programs.d
//! takeover, F3/F4/F5 uprobe targets, F6/F15 globs, F7 map owners, F8 bytecode files,
//! F18 quota race, F19 audit) and variants of each class, with real unprivileged users
//! (`useradd`, `runuser`) driving the real CLI against the real daemon. Every refusal
//! is checked twice: the exit status and message, and that nothing changed (the
//! daemon's programs, links and bpffs pins as root sees them).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{BPFMAN, Daemon, Netns, obj};
use serde_json::Value;

const TENANTS: &str = "bpfsec-tenants";
/// The tenant under attack-and-test: narrow grants (file_dirs, uprobe_targets, globs).
const ALICE: &str = "bpfsec-alice";
/// Another tenant, whose objects alice must not reach.
const BOB: &str = "bpfsec-bob";
/// A tenant whose rule has manage_others and other_processes, and no file_dirs.
const CAROL: &str = "bpfsec-carol";

/// Creates the test users and their group once (idempotent across runs).
fn users() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        common::ensure_group(TENANTS);
        for u in [ALICE, BOB, CAROL] {
            common::ensure_user(u, Some(TENANTS), &[]);
        }
    });
}

fn id_of(flag: &str, user: &str) -> u32 {
    let o = Command::new("id")
        .args([flag, user])
        .output()
        .expect("running id");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {flag} {user}: {}", String::from_utf8_lossy(&o.stderr)))
}

fn uid(user: &str) -> u32 {
    id_of("-u", user)
}

fn gid(user: &str) -> u32 {
    id_of("-g", user)
}

fn chown(p: &Path, user: &str) {
    std::os::unix::fs::lchown(p, Some(uid(user)), Some(gid(user)))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn mkdir(p: &Path, user: &str, mode: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    chown(p, user);
    chmod(p, mode);
}

fn copy(from: &str, to: &Path, user: &str, mode: u32) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from} -> {}: {e}", to.display()));
    chown(to, user);
    chmod(to, mode);
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", link.display()));
}

/// Where the C library lies on this machine (`ldd /bin/true`).
fn libc_path() -> String {
    let o = Command::new("ldd")
        .arg("/bin/true")
        .output()
        .expect("running ldd");
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .find(|l| l.contains("libc.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(|p| {
            std::fs::canonicalize(p)
                .map(|c| c.display().to_string())
                .unwrap_or_else(|_| p.to_string())
        })
        .unwrap_or_else(|| panic!("no libc in `ldd /bin/true`: {text}"))
}

/// What may be granted to whom; the rest of the policy is fixed.
struct Opts {
    alice_max_programs: u32,
    alice_max_links: u32,
    netns: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            alice_max_programs: 50,
            alice_max_links: 50,
            netns: vec!["/var/run/netns/bpfsec-none-*".into()],
        }
    }
}

fn config(base: &Path, o: &Opts) -> String {
    let b = base.display();
    let netns = o
        .netns
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[api]
socket_group = "{TENANTS}"
max_connections_per_uid = 64
max_requests = 128
max_requests_per_uid = 64

[policy]
audit_log = "{b}/audit.log"

[[policy.rule]]
name = "alice"
users = ["{ALICE}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["tracepoint", "uprobe", "uretprobe", "tcx"]
file_dirs = ["{b}/alice-bpf"]
tracepoints = ["syscalls/sys_enter_*"]
uprobe_targets = ["{b}/alice-bin", "{b}/alice-glob/*.so"]
netns = [{netns}]
max_programs = {}
max_links = {}

[[policy.rule]]
name = "bob"
users = ["{BOB}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["tracepoint", "uprobe"]
file_dirs = ["{b}/bob-bpf"]
tracepoints = ["sys*"]
uprobe_targets = ["{b}/alice-bin"]

[[policy.rule]]
name = "carol"
users = ["{CAROL}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["tracepoint", "uprobe", "uretprobe"]
uprobe_targets = ["{b}/alice-bin"]
manage_others = true
other_processes = true
"#,
        o.alice_max_programs, o.alice_max_links
    )
}

/// A daemon with the policy above and a world-traversable directory of tenant files:
/// * `alice-bpf/` (alice's, 0755): her objects `tracing.o`, `tc.o`, `xdp.o`;
/// * `bob-bpf/` (bob's, 0700): his private `tracing.o` (0600);
/// * `alice-bin/` (alice's): a granted uprobe directory with `libcopy.so`, a copy of
///   the C library; `alice-glob/` (alice's): granted through `alice-glob/*.so`;
/// * `secret/` (root's, 0700): `root.o` (0600);
/// * `outside/` (root's, 0755): `world.o`, a world-readable object no rule grants.
struct Lab {
    d: Daemon,
    base: PathBuf,
    _base: tempfile::TempDir,
}

/// Root's view of what the daemon holds: program ids, link ids, bpffs pins.
#[derive(Debug, PartialEq, Eq)]
struct State {
    programs: BTreeSet<u64>,
    links: BTreeSet<u64>,
    pins: Vec<String>,
}

impl Lab {
    fn new() -> Self {
        Self::with(Opts::default())
    }

    fn with(o: Opts) -> Self {
        users();
        let base_dir = tempfile::Builder::new()
            .prefix("bpfsec-")
            .tempdir()
            .expect("tempdir");
        let base = base_dir.path().to_path_buf();
        chmod(&base, 0o755);
        let tracing = obj("tracing_test.bpf.o");
        let ab = base.join("alice-bpf");
        mkdir(&ab, ALICE, 0o755);
        copy(&tracing, &ab.join("tracing.o"), ALICE, 0o644);
        copy(&obj("tc_test.bpf.o"), &ab.join("tc.o"), ALICE, 0o644);
        copy(&obj("xdp_test.bpf.o"), &ab.join("xdp.o"), ALICE, 0o644);
        let bb = base.join("bob-bpf");
        mkdir(&bb, BOB, 0o700);
        copy(&tracing, &bb.join("tracing.o"), BOB, 0o600);
        let bin = base.join("alice-bin");
        mkdir(&bin, ALICE, 0o755);
        copy(&libc_path(), &bin.join("libcopy.so"), ALICE, 0o644);
        mkdir(&base.join("alice-glob"), ALICE, 0o755);
        mkdir(&base.join("alice-tmp"), ALICE, 0o755);
        let secret = base.join("secret");
        mkdir(&secret, "root", 0o700);
        copy(&tracing, &secret.join("root.o"), "root", 0o600);
        let outside = base.join("outside");
        mkdir(&outside, "root", 0o755);
        copy(&tracing, &outside.join("world.o"), "root", 0o644);
        let d = Daemon::start_with_config(&config(&base, &o));
        // Tenants reach the socket through the daemon's private directory.
        chmod(d.dir.path(), 0o755);
        Lab {
            d,
            base,
            _base: base_dir,
        }
    }

    fn p(&self, rel: &str) -> String {
        self.base.join(rel).display().to_string()
    }

    fn as_user(&self, user: &str, args: &[&str]) -> Output {
        self.d.cli_as(user, args)
    }

    fn ok(&self, user: &str, args: &[&str]) -> Value {
        self.d.json_as(user, args)
    }

    /// Asserts that `user` is refused, with every one of `want` in the message, and that
    /// the daemon holds exactly what it held before. Returns the message.
    fn refused(&self, user: &str, args: &[&str], want: &[&str]) -> String {
        let before = self.state();
        let o = self.as_user(user, args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success(),
            "{user}: bpfman {} should be refused; it printed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout)
        );
        for w in want {
            assert!(
                err.contains(w),
                "{user}: bpfman {}: expected '{w}' in: {err}",
                args.join(" ")
            );
        }
        assert_eq!(
            self.state(),
            before,
            "{user}: bpfman {} was refused but changed what the daemon holds",
            args.join(" ")
        );
        err
    }

    fn state(&self) -> State {
        let ids = |v: Value, key: &str| -> BTreeSet<u64> {
            v.as_array()
                .map(|a| a.iter().filter_map(|x| x[key].as_u64()).collect())
                .unwrap_or_default()
        };
        State {
            programs: ids(self.d.json(&["list", "programs"]), "id"),
            links: ids(self.d.json(&["list", "links"]), "link_id"),
            pins: self.d.pins(),
        }
    }

    /// Programs (root's listing) owned by `user`.
    fn owned_programs(&self, user: &str) -> usize {
        let u = uid(user) as u64;
        self.d
            .json(&["list", "programs"])
            .as_array()
            .map(|a| a.iter().filter(|p| p["owner_uid"] == u).count())
            .unwrap_or(0)
    }

    fn owned_links(&self, user: &str) -> usize {
        let u = uid(user) as u64;
        self.d
            .json(&["list", "links"])
            .as_array()
            .map(|a| a.iter().filter(|p| p["owner_uid"] == u).count())
            .unwrap_or(0)
    }

    /// Loads `TYPE:FUNCTION` from `path` as `user` and returns its id.
    fn load(&self, user: &str, path: &str, prog: &str) -> u64 {
        let v = self.ok(user, &["load", "file", "--path", path, "--programs", prog]);
        v[0]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("load printed no id: {v}"))
    }

    fn alice_load_uprobe(&self) -> u64 {
        self.load(ALICE, &self.p("alice-bpf/tracing.o"), "uprobe:uprobe_count")
    }

    /// One v1 Load of `tracepoint:tp_count` from `path` (sent as is: no client-side
    /// normalisation), with `uuid` unless empty, through the real gRPC API by a copy of
    /// this test binary run as `user`. Returns "ok N" or "err CODE: MESSAGE".
    fn v1_load(&self, user: &str, path: &str, uuid: &str) -> String {
        let helper = self.base.join("helper");
        if !helper.exists() {
            let me = std::env::current_exe().expect("current_exe");
            copy(&me.display().to_string(), &helper, "root", 0o755);
        }
        let o = Command::new("runuser")
            .args(["-u", user, "--", "env"])
            .arg(format!("BPFSEC_V1_SOCKET={}", self.d.socket.display()))
            .arg(format!("BPFSEC_V1_PATH={path}"))
            .arg(format!("BPFSEC_V1_UUID={uuid}"))
            .arg(&helper)
            .args([
                "--exact",
                "helper_v1_load_with_uuid",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .expect("running the helper");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .find_map(|l| l.split_once("V1RESULT: ").map(|(_, r)| r.to_string()))
            .unwrap_or_else(|| {
                panic!(
                    "helper printed no result: {out}\n{}",
                    String::from_utf8_lossy(&o.stderr)
                )
            })
    }

    /// Like `refused`, for a raw v1 load.
    fn v1_refused(&self, user: &str, path: &str, want: &[&str]) -> String {
        let before = self.state();
        let r = self.v1_load(user, path, "");
        assert!(
            r.starts_with("err"),
            "{user}: v1 load of {path:?} should be refused: {r}"
        );
        for w in want {
            assert!(
                r.contains(w),
                "{user}: v1 load of {path:?}: expected '{w}' in: {r}"
            );
        }
        assert_eq!(
            self.state(),
            before,
            "{user}: refused v1 load of {path:?} changed the daemon"
        );
        r
    }

    /// The daemon still serves root.
    fn answers(&self) {
        let info = self.d.json(&["system", "info"]);
        assert!(info.is_object(), "system info: {info}");
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.base.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    fn audit_len(&self) -> u64 {
        std::fs::metadata(self.base.join("audit.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// A process started by the test (killed and reaped on drop).
struct Proc(Child);

impl Proc {
    /// Runs `cmd` as `user` (all uids and gids the user's; no supplementary groups).
    fn as_user(user: &str, cmd: &str, args: &[&str]) -> Self {
        use std::os::unix::process::CommandExt;
        let c = Command::new(cmd)
            .args(args)
            .uid(uid(user))
            .gid(gid(user))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd} as {user}: {e}"));
        Proc(c)
    }

    fn as_root(cmd: &str, args: &[&str]) -> Self {
        let c = Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd}: {e}"));
        Proc(c)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// `major:minor inode` of a file, as the daemon's `probed` detail names it.
fn file_identity(p: &Path) -> String {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    let dev = m.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major:x}:{minor:x} {}", m.ino())
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// Swaps two paths atomically (renameat2 RENAME_EXCHANGE), whatever they are.
fn exchange(a: &Path, b: &Path) {
    use std::ffi::CString;
    let ca = CString::new(a.as_os_str().as_encoded_bytes()).expect("path");
    let cb = CString::new(b.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: two valid NUL-terminated paths relative to the cwd; flag 2 is RENAME_EXCHANGE.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            2u32,
        )
    };
    assert!(
        r == 0,
        "renameat2 exchange {} {}: {}",
        a.display(),
        b.display(),
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------
// F1: programs.d takeover and the reserved `bpfman.io/` metadata prefix.
// ---------------------------------------------------------------------------------

/// A declaration of one tracepoint program in programs.d (no attachment).
fn declare_static(d: &Daemon, file: &str, name: &str, object: &str) {
    let dir = d.dir.path().join("programs.d");
    std::fs::create_dir_all(&dir).expect("creating programs.d");
    std::fs::write(
        dir.join(format!("{file}.toml")),
        format!(
            "[[program]]\nname = \"{name}\"\nfile = \"{object}\"\nfunction = \"tp_count\"\n\
             type = \"tracepoint\"\n"
        ),
    )
    .expect("writing a programs.d file");
}

/// Programs (root's listing) carrying `bpfman.io/static` = `key`.
fn static_programs(d: &Daemon, key: &str) -> Vec<Value> {
    d.json(&["list", "programs"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["bpfman.io/static"] == key)
        .collect()
}

#[test]
fn f1_programs_d_takeover_is_refused() {
    require_root!();
    let e = Lab::new();
    declare_static(&e.d, "sec", "tp", &obj("tracing_test.bpf.o"));
    wait_for("programs.d to load sec/tp", 30, || {
        static_programs(&e.d, "sec/tp").len() == 1
    });
    let declared = &static_programs(&e.d, "sec/tp")[0];
    let id = declared["id"].as_u64().expect("id").to_string();
    let got = e.d.json(&["get", "program", &id]);
    let key = got["metadata"]["bpfman.io/static"]
        .as_str()
        .expect("static key")
        .to_string();
    let digest = got["metadata"]["bpfman.io/static-digest"]
        .as_str()
        .expect("static digest")
        .to_string();
    // What a tenant reads of root's declared program ...
    let seen = e.ok(ALICE, &["get", "program", &id]);
    assert_eq!(seen["metadata"]["bpfman.io/static"], key.as_str(), "{seen}");
    // ... it cannot stamp on its own program: with the key and digest, either alone,
    // or any other key under bpfman.io/ (the Kubernetes agent's among them).
    let path = e.p("alice-bpf/tracing.o");
    let forged = [
        format!("bpfman.io/static={key},bpfman.io/static-digest={digest}"),
        format!("bpfman.io/static={key}"),
        format!("bpfman.io/static-digest={digest}"),
        "bpfman.io/uuid=4b2c1f5e-0000-4000-8000-000000000001".to_string(),
        "bpfman.io/ProgramName=sec".to_string(),
        "team=a,bpfman.io/probed=/usr/lib/libc.so.6".to_string(),
    ];
    for m in &forged {
        let err = e.refused(
            ALICE,
            &[
                "load",
                "file",
                "--path",
                &path,
                "--programs",
                "tracepoint:tp_count",
                "-m",
                m,
            ],
            &["bpfman.io/", "only root"],
        );
        assert!(err.contains("denied"), "{err}");
    }
    // carol's rule has manage_others: the prefix is still root's.
    e.refused(
        CAROL,
        &[
            "load",
            "file",
            "--path",
            &path,
            "--programs",
            "tracepoint:tp_count",
            "-m",
            &forged[0],
        ],
        &["bpfman.io/", "only root"],
    );
    // Links' metadata too (a forged `probed` detail would lie about what is probed).
    let mine = e.load(ALICE, &path, "tracepoint:tp_count");
    for m in [
        "bpfman.io/probed=/usr/bin/true (0:0 1)",
        "bpfman.io/static=sec/tp",
    ] {
        e.refused(
            ALICE,
            &[
                "attach",
                &mine.to_string(),
                "tracepoint",
                "-t",
                "syscalls/sys_enter_getpid",
                "-m",
                m,
            ],
            &["bpfman.io/", "only root"],
        );
    }
    // Keys that merely resemble the prefix are the tenant's own.
    let ok = e.ok(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &path,
            "--programs",
            "tracepoint:tp_count",
            "-m",
            "bpfman.iox/static=sec/tp,example.com/bpfman.io/static=sec/tp",
        ],
    );
    assert_eq!(ok[0]["owner_uid"], uid(ALICE) as u64, "{ok}");
    // programs.d still holds exactly one copy, root's, and never adopts a tenant's.
    std::thread::sleep(Duration::from_secs(3));
    let now = static_programs(&e.d, "sec/tp");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["id"].as_u64(), declared["id"].as_u64());
    assert_eq!(now[0]["owner_uid"], 0);
    // And a tenant cannot unload or detach root's declared program.
    e.refused(ALICE, &["unload", &id], &["belongs to another user"]);
    // The denials were audited.
    let a = e.audit();
    assert!(
        a.iter().any(|x| x["uid"] == uid(ALICE) as u64
            && x["action"] == "load"
            && x["decision"] == "deny"
            && x["reason"].as_str().unwrap_or("").contains("bpfman.io/")),
        "{a:?}"
    );
}

/// Root may hold two programs with one programs.d key (it can set any metadata): the
/// daemon reports the duplicate and leaves both alone, loading no third copy, even when
/// the declaration changes; once root unloads the extra one, programs.d takes over again.
#[test]
fn f1_duplicated_static_key_is_reported_and_left_alone() {
    require_root!();
    let e = Lab::new();
    let object = obj("tracing_test.bpf.o");
    declare_static(&e.d, "dup", "tp", &object);
    wait_for("programs.d to load dup/tp", 30, || {
        static_programs(&e.d, "dup/tp").len() == 1
    });
    let first = static_programs(&e.d, "dup/tp")[0].clone();
    let digest = first["metadata"]["bpfman.io/static-digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let extra = e.d.load_one(&[
        "--path",
        &object,
        "--programs",
        "tracepoint:tp_count",
        "-m",
        &format!("bpfman.io/static=dup/tp,bpfman.io/static-digest={digest}"),
    ]);
    // Change the declaration: programs.d must not replace either copy nor add one.
    std::fs::write(
        e.d.dir.path().join("programs.d/dup.toml"),
        format!(
            "[[program]]\nname = \"tp\"\nfile = \"{object}\"\nfunction = \"tp_count\"\n\
             type = \"tracepoint\"\nmetadata = {{ changed = \"yes\" }}\n"
        ),
    )
    .expect("rewriting dup.toml");
    wait_for("the duplicate to be reported", 30, || {
        e.d.log().contains("static program dup/tp: loaded 2 times")
    });
    std::thread::sleep(Duration::from_secs(3));
    let now = static_programs(&e.d, "dup/tp");
    let ids: BTreeSet<u64> = now.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([first["id"].as_u64().expect("id"), extra as u64]),
        "programs.d touched a duplicated key: {now:?}"
    );
    // Root settles it: the changed declaration then replaces the remaining copy.
    e.d.json(&["unload", &extra.to_string()]);
    wait_for("programs.d to apply the changed declaration", 30, || {
        let v = static_programs(&e.d, "dup/tp");
        v.len() == 1 && v[0]["metadata"]["changed"] == "yes"
    });
}

/// v1's `uuid` field is stored as `bpfman.io/uuid`: refused for a tenant (sent with the
/// real gRPC API by this test binary re-run as the tenant), allowed for root.
#[test]
fn f1_v1_uuid_is_refused_for_tenants() {
    require_root!();
    let e = Lab::new();
    let path = e.p("alice-bpf/tracing.o");
    let run = |user: &str, uuid: &str| e.v1_load(user, &path, uuid);
    let before = e.state();
    let r = run(ALICE, "4b2c1f5e-0000-4000-8000-000000000002");
    assert!(
        r.starts_with("err") && r.contains("bpfman.io/uuid") && r.contains("only root"),
        "{r}"
    );
    assert_eq!(e.state(), before, "a refused v1 load changed the daemon");
    // The same request without uuid works for alice (so the refusal is the uuid's).
    let r = run(ALICE, "");
    assert!(r.starts_with("ok"), "{r}");
    assert_eq!(e.owned_programs(ALICE), 1);
}

/// Run by `f1_v1_uuid_is_refused_for_tenants` as a tenant: one v1 Load with `uuid`.
#[test]
#[ignore = "helper: run as a tenant by f1_v1_uuid_is_refused_for_tenants"]
fn helper_v1_load_with_uuid() {
    use bpfman_api::v1;
    let Ok(socket) = std::env::var("BPFSEC_V1_SOCKET") else {
        eprintln!("SKIP helper_v1_load_with_uuid: only f1_v1_uuid_is_refused_for_tenants runs it");
        return;
    };
    let path = std::env::var("BPFSEC_V1_PATH").expect("BPFSEC_V1_PATH");
    let uuid = std::env::var("BPFSEC_V1_UUID").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let r = rt.block_on(async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("unix://{socket}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = v1::bpfman_client::BpfmanClient::new(ch);
        let req = v1::LoadRequest {
            bytecode: Some(v1::BytecodeLocation {
                location: Some(v1::bytecode_location::Location::File(path)),
            }),
            metadata: Default::default(),
            global_data: Default::default(),
            uuid: (!uuid.is_empty()).then_some(uuid),
            map_owner_id: None,
            info: vec![v1::LoadInfo {
                name: "tp_count".into(),
                program_type: v1::BpfmanProgramType::Tracepoint as i32,
                info: None,
            }],
        };
        c.load(req)
            .await
            .map(|r| r.into_inner().programs.len())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    });
    match r {
        Ok(n) => println!("V1RESULT: ok {n}"),
        Err(e) => println!("V1RESULT: err {e}"),
    }
}

// ---------------------------------------------------------------------------------
// F7: --map-owner-id of someone else's program.
// ---------------------------------------------------------------------------------

#[test]
fn f7_foreign_map_owner_is_refused() {
    require_root!();
    let e = Lab::new();
    let bobs = e.load(BOB, &e.p("bob-bpf/tracing.o"), "tracepoint:tp_shared");
    let roots = e.d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_shared",
    ]) as u64;
    let path = e.p("alice-bpf/tracing.o");
    for owner in [bobs, roots] {
        let err = e.refused(
            ALICE,
            &[
                "load",
                "file",
                "--path",
                &path,
                "--programs",
                "tracepoint:tp_shared",
                "--map-owner-id",
                &owner.to_string(),
            ],
            &["map owner program", "belongs to another user"],
        );
        assert!(err.contains(&owner.to_string()), "{err}");
    }
    // Bob cannot share root's maps either.
    e.refused(
        BOB,
        &[
            "load",
            "file",
            "--path",
            &e.p("bob-bpf/tracing.o"),
            "--programs",
            "tracepoint:tp_shared",
            "--map-owner-id",
            &roots.to_string(),
        ],
        &["belongs to another user"],
    );
    // Her own program's maps she may share ...
    let own = e.load(ALICE, &path, "tracepoint:tp_shared");
    let sharer = e.ok(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &path,
            "--programs",
            "tracepoint:tp_shared",
            "--map-owner-id",
            &own.to_string(),
        ],
    );
    assert_eq!(sharer[0]["map_owner_id"], own, "{sharer}");
    // ... and a rule with manage_others may share another's.
    let c = e.ok(
        CAROL,
        &[
            "load",
            "file",
            "--path",
            &obj("tracing_test.bpf.o"),
            "--programs",
            "tracepoint:tp_shared",
            "--map-owner-id",
            &bobs.to_string(),
        ],
    );
    assert_eq!(c[0]["map_owner_id"], bobs, "{c}");
    // Bob's program is untouched by alice's attempts: still his, with one map user.
    let b = e.d.json(&["get", "program", &bobs.to_string()]);
    assert_eq!(b["owner_uid"], uid(BOB) as u64);
    assert_eq!(
        b["map_used_by"],
        serde_json::json!([c[0]["id"].as_u64().expect("id").to_string()]),
        "{b}"
    );
}

// ---------------------------------------------------------------------------------
// F8: bytecode files are opened as the caller, beneath the granted directory.
// ---------------------------------------------------------------------------------

/// `bpfman load file --path PATH --programs tracepoint:tp_count` as `user`.
fn tp_load(path: &str) -> Vec<String> {
    [
        "load",
        "file",
        "--path",
        path,
        "--programs",
        "tracepoint:tp_count",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn f8_symlinks_out_of_file_dirs_are_not_followed() {
    require_root!();
    let e = Lab::new();
    let ab = e.base.join("alice-bpf");
    // The last component: to a root-only object, to bob's private one, to a
    // world-readable one outside the grant (only confinement stops this), relative.
    symlink(&e.p("secret/root.o"), &ab.join("root-link.o"));
    symlink(&e.p("bob-bpf/tracing.o"), &ab.join("bob-link.o"));
    symlink(&e.p("outside/world.o"), &ab.join("world-link.o"));
    symlink("../outside/world.o", &ab.join("rel-link.o"));
    symlink("/dev/zero", &ab.join("zero.o"));
    // A parent component: a directory symlink inside the grant that leads out.
    symlink(&e.p("outside"), &ab.join("sub"));
    symlink(&e.p("secret"), &ab.join("secretdir"));
    symlink("../bob-bpf", &ab.join("bobdir"));
    // /proc magic links never resolve.
    symlink("/proc/self/root/", &ab.join("magic"));
    for name in [
        "root-link.o",
        "bob-link.o",
        "world-link.o",
        "rel-link.o",
        "zero.o",
        "sub/world.o",
        "secretdir/root.o",
        "bobdir/tracing.o",
        "magic",
    ] {
        let path = ab.join(name).display().to_string();
        let err = e.refused(ALICE, &strs(&tp_load(&path)), &["bytecode file"]);
        assert!(
            err.contains("leads outside") || err.contains("does not follow"),
            "{name}: the refusal should name the escape: {err}"
        );
        // Nothing of the target's content (its function list) shows.
        assert!(!err.contains("tp_shared"), "{name}: {err}");
    }
    // A symlink that stays inside the grant is fine.
    symlink("tracing.o", &ab.join("inside-link.o"));
    e.load(
        ALICE,
        &ab.join("inside-link.o").display().to_string(),
        "tracepoint:tp_count",
    );
    assert_eq!(e.owned_programs(ALICE), 1);
    // The same objects by their real paths: outside file_dirs, refused by the policy.
    for p in [e.p("outside/world.o"), e.p("bob-bpf/tracing.o")] {
        e.refused(ALICE, &strs(&tp_load(&p)), &["not under its file_dirs"]);
    }
}

#[test]
fn f8_unreadable_files_load_nothing_and_errors_reveal_nothing() {
    require_root!();
    let e = Lab::new();
    let ab = e.base.join("alice-bpf");
    // A root-owned 0600 object lying in alice's own directory.
    copy(
        &obj("tracing_test.bpf.o"),
        &ab.join("planted.o"),
        "root",
        0o600,
    );
    let planted = ab.join("planted.o").display().to_string();
    let err = e.refused(ALICE, &strs(&tp_load(&planted)), &["may not open"]);
    // Asking for a function it lacks must not list the file's functions.
    let err2 = e.refused(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &planted,
            "--programs",
            "tracepoint:no_such_fn",
        ],
        &["may not open"],
    );
    for fname in ["tp_count", "tp_shared", "uprobe_count", "kprobe_count"] {
        assert!(
            !err.contains(fname) && !err2.contains(fname),
            "{err}\n{err2}"
        );
    }
    // Readable by alice, the same request does list them (the contrast is the point).
    let own = e.p("alice-bpf/tracing.o");
    let o = e.as_user(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &own,
            "--programs",
            "tracepoint:no_such_fn",
        ],
    );
    let own_err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && own_err.contains("no_such_fn"),
        "{own_err}"
    );
    // A root 0700 directory inside the grant: an existing and a missing file look the
    // same to alice (as they would to `ls`), and so do the same names one level down.
    let hidden = ab.join("hidden");
    mkdir(&hidden, "root", 0o700);
    copy(
        &obj("tracing_test.bpf.o"),
        &hidden.join("exists.o"),
        "root",
        0o644,
    );
    mkdir(&hidden.join("deeper"), "root", 0o755);
    let msg = |rel: &str| {
        let p = ab.join(rel).display().to_string();
        e.refused(ALICE, &strs(&tp_load(&p)), &[])
            .replace(&p, "PATH")
    };
    let exists = msg("hidden/exists.o");
    let missing = msg("hidden/missing.o");
    assert_eq!(exists, missing, "existence leaks through the error");
    assert_eq!(msg("hidden/deeper/x.o"), msg("hidden/nodir/x.o"));
    assert!(exists.contains("may not open"), "{exists}");
    // Bob's 0600 object through a path alice's rule does grant is no different: a
    // root rule-less tenant (carol, no file_dirs) gets the kernel's own answer.
    let carol_bob = e.refused(
        CAROL,
        &strs(&tp_load(&e.p("bob-bpf/tracing.o"))),
        &["may not open"],
    );
    let carol_none = e.refused(
        CAROL,
        &strs(&tp_load(&e.p("bob-bpf/none.o"))),
        &["may not open"],
    );
    assert_eq!(
        carol_bob.replace("tracing.o", "X"),
        carol_none.replace("none.o", "X")
    );
    // And the missing file where alice can look says so (no false secrecy).
    e.refused(
        ALICE,
        &strs(&tp_load(&e.p("alice-bpf/none.o"))),
        &["does not exist"],
    );
}

#[test]
fn f8_special_files_are_refused_quickly() {
    require_root!();
    let e = Lab::new();
    let ab = e.base.join("alice-bpf");
    let fifo = ab.join("fifo.o");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
    chown(&fifo, ALICE);
    let sock = ab.join("sock.o");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("binding a socket");
    chown(&sock, ALICE);
    mkdir(&ab.join("dir.o"), ALICE, 0o755);
    // A 3 GB sparse file with an ELF header.
    let sparse = ab.join("sparse.o");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&sparse).expect("creating the sparse file");
        f.write_all(b"\x7fELF\x02\x01\x01\0")
            .expect("writing the header");
        f.set_len(3 << 30).expect("extending the sparse file");
    }
    chown(&sparse, ALICE);
    chmod(&sparse, 0o644);
    let pid = e.d.pid().expect("daemon pid");
    let rss_before = vm_rss_kib(pid);
    for (name, want) in [
        ("fifo.o", "a FIFO"),
        ("sock.o", "not a regular file"),
        ("dir.o", "a directory"),
        ("sparse.o", "bytes; the daemon accepts files of at most"),
    ] {
        let path = ab.join(name).display().to_string();
        let t = Instant::now();
        let err = e.refused(ALICE, &strs(&tp_load(&path)), &[]);
        assert!(
            err.contains(want) || (name == "sock.o" && err.contains("a socket")),
            "{name}: expected '{want}' in: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name} took {:?} to refuse",
            t.elapsed()
        );
        e.answers();
    }
    let rss_after = vm_rss_kib(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB on a 3 GB sparse file"
    );
    // A rule without file_dirs (carol) opens anywhere she can, still only regular
    // files and never through magic links.
    let world = e.p("outside/world.o");
    for (path, want) in [
        ("/dev/zero".to_string(), "a character device"),
        ("/dev/null".to_string(), "a character device"),
        (format!("/proc/self/root{world}"), "does not follow"),
        ("/proc/self/fd/0".to_string(), "does not follow"),
        (fifo.display().to_string(), "a FIFO"),
        (e.base.display().to_string(), "a directory"),
    ] {
        let t = Instant::now();
        let err = e.refused(CAROL, &strs(&tp_load(&path)), &[]);
        assert!(
            err.contains(want) || err.contains("not a regular file"),
            "{path}: expected '{want}' in: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            t.elapsed()
        );
    }
    e.answers();
}

#[test]
fn f8_symlink_flipped_during_loads_never_loads_the_target() {
    require_root!();
    let e = Lab::new();
    let ab = e.base.join("alice-bpf");
    // flip.o swaps between alice's own xdp object (no tp_count in it: loading it fails)
    // and a symlink to the world-readable tracing object outside the grant (which has
    // tp_count: loading it would succeed). Likewise a parent directory.
    copy(&obj("xdp_test.bpf.o"), &ab.join("flip.o"), ALICE, 0o644);
    symlink(&e.p("outside/world.o"), &ab.join("flip-spare.o"));
    mkdir(&ab.join("flipdir"), ALICE, 0o755);
    copy(
        &obj("xdp_test.bpf.o"),
        &ab.join("flipdir/world.o"),
        ALICE,
        0o644,
    );
    symlink(&e.p("outside"), &ab.join("flipdir-spare"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, ab) = (stop.clone(), ab.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                exchange(&ab.join("flip.o"), &ab.join("flip-spare.o"));
                exchange(&ab.join("flipdir"), &ab.join("flipdir-spare"));
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    let paths = [
        ab.join("flip.o").display().to_string(),
        ab.join("flipdir/world.o").display().to_string(),
    ];
    let mut escapes = 0;
    let mut loaded = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    while tries < 60 && Instant::now() < deadline {
        let path = &paths[tries % 2];
        tries += 1;
        let o = e.as_user(
            ALICE,
            &[
                "-o",
                "json",
                "load",
                "file",
                "--path",
                path,
                "--programs",
                "tracepoint:tp_count",
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            loaded.push(format!("{path}: {}", String::from_utf8_lossy(&o.stdout)));
        } else if err.contains("leads outside") {
            escapes += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().expect("flipper thread");
    assert!(
        loaded.is_empty(),
        "a flipped symlink loaded the outside object: {loaded:?}"
    );
    assert!(flips > 10, "the flipper barely ran ({flips})");
    assert!(
        escapes > 0,
        "no load ever met the symlink in {tries} tries: the race was not exercised"
    );
    assert_eq!(e.owned_programs(ALICE), 0);
    e.answers();
}

// ---------------------------------------------------------------------------------
// F3/F4/F5: uprobe targets.
// ---------------------------------------------------------------------------------

fn uprobe_args(prog: u64, target: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "attach",
        &prog.to_string(),
        "uprobe",
        "--target",
        target,
        "--fn-name",
        "getpid",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn f3_symlink_in_uprobe_targets_is_not_followed() {
    require_root!();
    let e = Lab::new();
    let libc = libc_path();
    let bin = e.base.join("alice-bin");
    let libdir = Path::new(&libc)
        .parent()
        .expect("libc's directory")
        .display()
        .to_string();
    symlink(&libc, &bin.join("libc.so.6"));
    symlink(&libdir, &bin.join("lib"));
    let rel = format!("../../../..{libc}");
    symlink(&rel, &bin.join("rel.so"));
    symlink("/proc/self/root/", &bin.join("magic"));
    let prog = e.alice_load_uprobe();
    for target in [
        bin.join("libc.so.6"),
        bin.join("lib/libc.so.6"),
        bin.join("rel.so"),
        bin.join(format!("magic{libc}")),
    ] {
        let t = target.display().to_string();
        let err = e.refused(
            ALICE,
            &strs(&uprobe_args(prog, &t, &[])),
            &["uprobe target"],
        );
        assert!(
            err.contains("leads outside") || err.contains("does not follow"),
            "{t}: {err}"
        );
    }
    // libc itself by its path is not granted.
    e.refused(
        ALICE,
        &strs(&uprobe_args(prog, &libc, &[])),
        &["not among its uprobe_targets"],
    );
    // A bare library name (ld.so.cache) is root's.
    e.refused(ALICE, &strs(&uprobe_args(prog, "libc", &[])), &["libc"]);
    // The real file inside the grant attaches, and `probed` names that very file.
    let copy_path = bin.join("libcopy.so");
    let link = e.ok(
        ALICE,
        &strs(&uprobe_args(prog, &copy_path.display().to_string(), &[])),
    )["link_id"]
        .as_u64()
        .expect("link_id");
    let l = common::link_in(&e.d.json(&["list", "links"]), link);
    let probed = l["details"]["probed"].as_str().unwrap_or_default();
    assert!(
        probed.contains(&file_identity(&copy_path)),
        "probed should name {}: {l}",
        file_identity(&copy_path)
    );
}

/// F3 through `--container-pid`: a process of alice's own in the host's mount
/// namespace passes the user-namespace check, and its root is the host's `/`. The
/// target must still be confined to the granted directory: a symlink in it must not
/// lead to the host's libc.
#[test]
fn f3_container_pid_of_own_host_process_does_not_follow_symlinks() {
    require_root!();
    let e = Lab::new();
    let libc = libc_path();
    let bin = e.base.join("alice-bin");
    symlink(&libc, &bin.join("libc.so.6"));
    let libdir = Path::new(&libc)
        .parent()
        .expect("libc's directory")
        .display()
        .to_string();
    symlink(&libdir, &bin.join("lib"));
    let prog = e.alice_load_uprobe();
    let sleeper = Proc::as_user(ALICE, "sleep", &["300"]);
    let pid = sleeper.pid();
    // The granted regular file works through the own process's root.
    let ok = e.ok(
        ALICE,
        &strs(&uprobe_args(
            prog,
            &bin.join("libcopy.so").display().to_string(),
            &["--container-pid", &pid],
        )),
    );
    assert!(ok["link_id"].as_u64().is_some(), "{ok}");
    for t in [bin.join("libc.so.6"), bin.join("lib/libc.so.6")] {
        let before = e.state();
        let o = e.as_user(
            ALICE,
            &strs(&uprobe_args(
                prog,
                &t.display().to_string(),
                &["-o", "json", "--container-pid", &pid],
            )),
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            !o.status.success(),
            "BUG: alice probed the host's {libc} through the symlink {} with \
             --container-pid {pid} (her own process in the host mount namespace): {out}",
            t.display()
        );
        assert_eq!(e.state(), before);
    }
}

#[test]
fn f4_uprobe_glob_target_with_dotdot_or_slash_is_refused() {
    require_root!();
    let e = Lab::new();
    let glob_dir = e.base.join("alice-glob");
    copy(&libc_path(), &glob_dir.join("mine.so"), ALICE, 0o644);
    mkdir(&glob_dir.join("sub"), ALICE, 0o755);
    copy(&libc_path(), &glob_dir.join("sub/deep.so"), ALICE, 0o644);
    symlink(&libc_path(), &glob_dir.join("link.so"));
    symlink(&e.p("alice-bin"), &glob_dir.join("dir.so"));
    let prog = e.alice_load_uprobe();
    let g = glob_dir.display().to_string();
    for (t, want) in [
        (format!("{g}/../alice-bin/libcopy.so"), "'..' component"),
        (format!("{g}/sub/../mine.so"), "'..' component"),
        (format!("{g}/./mine.so"), "'.' component"),
        (format!("{g}//mine.so"), "empty component"),
        (format!("{g}/mine.so/"), "empty component"),
        // `*` does not cross '/'.
        (format!("{g}/sub/deep.so"), "not among its uprobe_targets"),
        (
            format!("{g}/dir.so/libcopy.so"),
            "not among its uprobe_targets",
        ),
        // The match is confined to the glob's directory.
        (format!("{g}/link.so"), "leads outside"),
        ("alice-glob/mine.so".to_string(), "relative"),
    ] {
        e.refused(ALICE, &strs(&uprobe_args(prog, &t, &[])), &[want]);
    }
    let ok = e.ok(
        ALICE,
        &strs(&uprobe_args(prog, &format!("{g}/mine.so"), &[])),
    );
    assert!(ok["link_id"].as_u64().is_some(), "{ok}");
}

/// F5: a mount namespace the tenant made (`unshare -Urm`) lets it bind-mount any file
/// over a granted path; probing through it is root's.
#[test]
fn f5_container_pid_in_tenant_user_namespace_is_refused() {
    require_root!();
    let e = Lab::new();
    let libc = libc_path();
    let bin = e.base.join("alice-bin");
    let fake = bin.join("fake.so");
    std::fs::write(&fake, b"").expect("creating fake.so");
    chown(&fake, ALICE);
    let ready = e.base.join("alice-tmp/ready");
    let script = format!(
        "mount --bind {libc} {} && touch {} && exec sleep 300",
        fake.display(),
        ready.display()
    );
    let ns = Proc::as_user(ALICE, "unshare", &["-Urm", "sh", "-c", &script]);
    if (0..50).all(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !ready.exists()
    }) {
        eprintln!(
            "SKIP f5_container_pid_in_tenant_user_namespace_is_refused: unprivileged \
             `unshare -Urm` with a bind mount does not work here"
        );
        return;
    }
    let pid = ns.pid();
    // Inside the tenant's namespace fake.so is libc.
    let inner = std::fs::metadata(format!("/proc/{pid}/root{}", fake.display()))
        .expect("stat through the namespace")
        .len();
    assert!(
        inner > 1000,
        "the bind mount is not visible ({inner} bytes)"
    );
    let prog = e.alice_load_uprobe();
    let t = fake.display().to_string();
    e.refused(
        ALICE,
        &strs(&uprobe_args(prog, &t, &["--container-pid", &pid])),
        &["user namespace", "only root"],
    );
    // Even carol, whose rule has other_processes, may not.
    let cprog = e.load(CAROL, &obj("tracing_test.bpf.o"), "uprobe:uprobe_count");
    e.refused(
        CAROL,
        &strs(&uprobe_args(cprog, &t, &["--container-pid", &pid])),
        &["user namespace"],
    );
    // Root may (root is admin): the probe lands on what the namespace shows.
    let l =
        e.d.attach(&strs(&uprobe_args(prog, &t, &["--container-pid", &pid]))[1..]);
    let links = e.d.json(&["list", "links"]);
    let probed = common::link_in(&links, l as u64)["details"]["probed"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        probed.contains(&file_identity(Path::new(&libc))),
        "root's probe should name libc's inode: {probed}"
    );
}

#[test]
fn f5_foreign_pid_is_refused_and_own_pid_works() {
    require_root!();
    let e = Lab::new();
    let bin = e.base.join("alice-bin");
    let target = bin.join("libcopy.so").display().to_string();
    let prog = e.alice_load_uprobe();
    let mine = Proc::as_user(ALICE, "sleep", &["300"]);
    let bobs = Proc::as_user(BOB, "sleep", &["300"]);
    let roots = Proc::as_root("sleep", &["300"]);
    for (p, flag) in [
        (bobs.pid(), "--pid"),
        (roots.pid(), "--pid"),
        ("1".to_string(), "--pid"),
        (bobs.pid(), "--container-pid"),
        (roots.pid(), "--container-pid"),
    ] {
        e.refused(
            ALICE,
            &strs(&uprobe_args(prog, &target, &[flag, &p])),
            &["does not belong to the caller", "other_processes"],
        );
    }
    // A setuid-like process: alice's real uid but another effective one.
    let mixed = {
        use std::os::unix::process::CommandExt;
        let a = uid(ALICE);
        let b = uid(BOB);
        let mut c = Command::new("sleep");
        c.arg("300").stdin(Stdio::null());
        // SAFETY: setresuid in the child before exec; no allocation.
        unsafe {
            c.pre_exec(move || {
                if libc::setresuid(a, b, a) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Proc(c.spawn().expect("starting a mixed-uid sleep"))
    };
    e.refused(
        ALICE,
        &strs(&uprobe_args(prog, &target, &["--pid", &mixed.pid()])),
        &["does not belong to the caller"],
    );
    // A pid that does not exist.
    e.refused(
        ALICE,
        &strs(&uprobe_args(prog, &target, &["--pid", "999999999"])),
        &["does not exist"],
    );
    // Her own process: allowed, with the probed file's identity and the pid shown.
    let v = e.ok(
        ALICE,
        &strs(&uprobe_args(prog, &target, &["--pid", &mine.pid()])),
    );
    let link = v["link_id"].as_u64().expect("link_id");
    let l = common::link_in(&e.d.json(&["list", "links"]), link);
    assert_eq!(l["owner_uid"], uid(ALICE) as u64, "{l}");
    assert_eq!(l["details"]["pid"], mine.pid(), "{l}");
    let probed = l["details"]["probed"].as_str().unwrap_or_default();
    assert!(
        probed.contains(&target) && probed.contains(&file_identity(Path::new(&target))),
        "probed detail: {l}"
    );
    // other_processes = true (carol) may scope to bob's.
    let cprog = e.load(CAROL, &obj("tracing_test.bpf.o"), "uprobe:uprobe_count");
    e.ok(
        CAROL,
        &strs(&uprobe_args(cprog, &target, &["--pid", &bobs.pid()])),
    );
    // Bob's rule grants alice-bin too, but not other processes.
    let bprog = e.load(BOB, &e.p("bob-bpf/tracing.o"), "uprobe:uprobe_count");
    e.refused(
        BOB,
        &strs(&uprobe_args(bprog, &target, &["--pid", &mine.pid()])),
        &["does not belong to the caller"],
    );
}

// ---------------------------------------------------------------------------------
// F6/F15: tracepoint and netns globs; `*` never crosses '/'.
// ---------------------------------------------------------------------------------

#[test]
fn f6_tracepoint_glob_with_dotdot_is_refused() {
    require_root!();
    let e = Lab::new();
    let prog = e.load(ALICE, &e.p("alice-bpf/tracing.o"), "tracepoint:tp_count");
    let p = prog.to_string();
    for (tp, want) in [
        (
            "syscalls/sys_enter_getpid/../../sched/sched_process_exec",
            "CATEGORY/NAME",
        ),
        (
            "syscalls/sys_enter_x/../sched_process_exec",
            "CATEGORY/NAME",
        ),
        ("syscalls/sys_enter_getpid/x", "CATEGORY/NAME"),
        ("syscalls/../sched/sched_process_exec", "CATEGORY/NAME"),
        ("syscalls/sys_enter_.", "CATEGORY/NAME"),
        ("syscalls/sys_enter_getpid\n", "CATEGORY/NAME"),
        ("sched/sched_process_exec", "not among its tracepoints"),
        ("syscalls/sys_exit_getpid", "not among its tracepoints"),
    ] {
        e.refused(ALICE, &["attach", &p, "tracepoint", "-t", tp], &[want]);
    }
    // bob's `sys*` does not reach across the '/' into syscalls/...
    let b = e.load(BOB, &e.p("bob-bpf/tracing.o"), "tracepoint:tp_count");
    e.refused(
        BOB,
        &[
            "attach",
            &b.to_string(),
            "tracepoint",
            "-t",
            "syscalls/sys_enter_getpid",
        ],
        &["not among its tracepoints"],
    );
    let ok = e.ok(
        ALICE,
        &[
            "attach",
            &p,
            "tracepoint",
            "-t",
            "syscalls/sys_enter_getpid",
        ],
    );
    assert!(ok["link_id"].as_u64().is_some(), "{ok}");
}

#[test]
fn f15_netns_glob_with_dotdot_is_refused() {
    require_root!();
    let a = Netns::new();
    let b = Netns::new();
    let e = Lab::with(Opts {
        netns: vec![format!("/var/run/netns/{}-*", a.name), a.path()],
        ..Opts::default()
    });
    // A directory that matches the glob, to walk out of.
    let xdir = format!("/var/run/netns/{}-x", a.name);
    std::fs::create_dir_all(&xdir).expect("creating a dir under /var/run/netns");
    struct RmDir(String);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = RmDir(xdir.clone());
    let prog = e.load(ALICE, &e.p("alice-bpf/tc.o"), "tcx:tc_count");
    let p = prog.to_string();
    let tcx = |ns: &str, iface: &str| -> Vec<String> {
        [
            "attach", &p, "tcx", "-d", "ingress", "-i", iface, "-p", "100", "--netns", ns,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let bpath = b.path();
    for (ns, want) in [
        (format!("{xdir}/../{}", b.name), "'..' component"),
        (format!("{}/../{}", a.path(), b.name), "'..' component"),
        (format!("{xdir}/./../{}", b.name), "component"),
        (
            format!("/var/run/netns/{}-x//{}", a.name, b.name),
            "empty component",
        ),
        (format!("{xdir}/{}", b.name), "not among its netns"),
        (bpath.clone(), "not among its netns"),
        (format!("{}/", a.path()), "empty component"),
    ] {
        e.refused(ALICE, &strs(&tcx(&ns, &b.peer_if)), &[want]);
    }
    let ok = e.ok(ALICE, &strs(&tcx(&a.path(), &a.peer_if)));
    assert!(ok["link_id"].as_u64().is_some(), "{ok}");
}

/// `..`, `.`, empty components and relative paths in every path-like field a caller
/// sends (bytecode file, uprobe target, netns), whatever the rule grants.
#[test]
fn dotdot_in_every_path_like_field_is_refused() {
    require_root!();
    let e = Lab::new();
    let ab = e.p("alice-bpf");
    let bad_paths = |dir: &str, file: &str| -> Vec<(String, &'static str)> {
        vec![
            (format!("{dir}/../outside/{file}"), "'..' component"),
            (format!("{dir}/./{file}"), "'.' component"),
            (format!("{dir}//{file}"), "empty component"),
            (format!("{dir}/{file}/.."), "'..' component"),
            (format!("alice-bpf/{file}"), "relative"),
        ]
    };
    for (path, want) in bad_paths(&ab, "tracing.o") {
        // Through the API as sent, whatever a client does to paths first.
        e.v1_refused(ALICE, &path, &[want]);
        e.v1_refused(CAROL, &path, &[want]);
        if want == "relative" {
            continue; // the CLI makes a relative path absolute against its cwd
        }
        // The CLI sends absolute paths as typed.
        e.refused(ALICE, &strs(&tp_load(&path)), &[want]);
        // carol's rule restricts no directory: still refused.
        e.refused(CAROL, &strs(&tp_load(&path)), &[want]);
    }
    let prog = e.alice_load_uprobe();
    let cprog = e.load(CAROL, &obj("tracing_test.bpf.o"), "uprobe:uprobe_count");
    for (t, want) in bad_paths(&e.p("alice-bin"), "libcopy.so") {
        if want == "relative" {
            continue; // a name with '/' but not absolute: refused below
        }
        e.refused(ALICE, &strs(&uprobe_args(prog, &t, &[])), &[want]);
        e.refused(CAROL, &strs(&uprobe_args(cprog, &t, &[])), &[want]);
    }
    e.refused(
        ALICE,
        &strs(&uprobe_args(prog, "alice-bin/libcopy.so", &[])),
        &["relative"],
    );
    let tc = e
        .load(ALICE, &e.p("alice-bpf/tc.o"), "tcx:tc_count")
        .to_string();
    for ns in [
        "/var/run/netns/bpfsec-none-x/../x",
        "/var/run/netns/./bpfsec-none-x",
        "var/run/netns/bpfsec-none-x",
    ] {
        e.refused(
            ALICE,
            &[
                "attach", &tc, "tcx", "-d", "ingress", "-i", "lo", "-p", "100", "--netns", ns,
            ],
            &["netns path"],
        );
    }
}

// ---------------------------------------------------------------------------------
// F18: quotas hold under parallel requests.
// ---------------------------------------------------------------------------------

#[test]
fn f18_parallel_loads_respect_max_programs() {
    require_root!();
    let e = std::sync::Arc::new(Lab::with(Opts {
        alice_max_programs: 20,
        alice_max_links: 10,
        ..Opts::default()
    }));
    let path = e.p("alice-bpf/tracing.o");
    let spawn_all = |n: usize, args: Vec<String>| -> Vec<Output> {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let (e, args, barrier) = (e.clone(), args.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    e.as_user(ALICE, &strs(&args))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    };
    let check = |outs: &[Output], quota: &str, max: usize, owned: usize| {
        let ok = outs.iter().filter(|o| o.status.success()).count();
        let others: Vec<String> = outs
            .iter()
            .filter(|o| !o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .filter(|m| !m.contains(quota))
            .collect();
        assert!(ok <= max, "{ok} succeeded against {quota} {max}");
        assert_eq!(owned, ok, "succeeded {ok}, owned {owned}");
        if others.is_empty() {
            assert_eq!(
                ok, max,
                "every refusal named the quota, yet only {ok} passed"
            );
        } else {
            eprintln!("refusals other than {quota}: {others:?}");
        }
    };
    let outs = spawn_all(40, tp_load(&path));
    check(&outs, "max_programs is 20", 20, e.owned_programs(ALICE));
    // Links: 30 parallel attaches of one program against max_links = 10.
    let ids: Vec<u64> =
        e.d.json(&["list", "programs"])
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
            .unwrap_or_default();
    let prog = ids.first().copied().expect("a loaded program");
    let args: Vec<String> = [
        "attach",
        &prog.to_string(),
        "tracepoint",
        "-t",
        "syscalls/sys_enter_getpid",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let outs = spawn_all(30, args);
    check(&outs, "max_links is 10", 10, e.owned_links(ALICE));
    e.answers();
}

// ---------------------------------------------------------------------------------
// F19: the audit log.
// ---------------------------------------------------------------------------------

#[test]
fn f19_audit_entries_have_source_outcome_and_bounded_size() {
    require_root!();
    let e = Lab::new();
    let a = uid(ALICE) as u64;
    // succeeded, failed (allowed, then the file is missing), denied.
    let id = e.load(ALICE, &e.p("alice-bpf/tracing.o"), "tracepoint:tp_count");
    e.refused(
        ALICE,
        &strs(&tp_load(&e.p("alice-bpf/missing.o"))),
        &["does not exist"],
    );
    e.refused(
        ALICE,
        &strs(&tp_load(&e.p("outside/world.o"))),
        &["file_dirs"],
    );
    let entries = e.audit();
    let find = |outcome: &str| -> Value {
        entries
            .iter()
            .find(|x| x["uid"] == a && x["action"] == "load" && x["outcome"] == outcome)
            .cloned()
            .unwrap_or_else(|| panic!("no '{outcome}' load entry for alice: {entries:?}"))
    };
    let ok = find("succeeded");
    let failed = find("failed");
    let denied = find("denied");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(failed["decision"], "allow");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{failed}"
    );
    assert_eq!(denied["decision"], "deny");
    for x in [&ok, &failed, &denied] {
        assert_eq!(
            x["command_source"], "client-reported (/proc/PID/cmdline)",
            "{x}"
        );
        assert!(
            x["command"].as_str().unwrap_or("").contains("load file"),
            "{x}"
        );
        assert_eq!(x["rule"], "alice", "{x}");
        assert!(x["pid"].as_i64().unwrap_or(0) > 0, "{x}");
    }
    // Unload by bob: denied, audited as such.
    e.refused(
        BOB,
        &["unload", &id.to_string()],
        &["belongs to another user"],
    );
    assert!(
        e.audit().iter().any(|x| x["uid"] == uid(BOB) as u64
            && x["action"] == "unload"
            && x["outcome"] == "denied"),
        "no denied unload"
    );
    // One denied request with huge input: a 4000-byte path outside the grant, 300
    // long function names, a long command line. The log grows by less than 10 KB, and
    // `command` is cut.
    let long_dir = format!("/{}", vec!["x".repeat(200); 19].join("/"));
    let long_path = format!("{long_dir}/y.o");
    let mut args: Vec<String> = ["load", "file", "--path", &long_path]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..300 {
        args.push("--programs".into());
        args.push(format!("tracepoint:f{i:03}_{}", "n".repeat(240)));
    }
    let log_before = e.d.log().len();
    let before = e.audit_len();
    e.refused(ALICE, &strs(&args), &["file_dirs"]);
    let grew = e.audit_len() - before;
    assert!(
        grew > 0 && grew < 10_000,
        "the audit log grew by {grew} bytes"
    );
    let last = e.audit().last().cloned().expect("an entry");
    assert_eq!(last["outcome"], "denied", "{last}");
    let cmd = last["command"].as_str().unwrap_or("");
    assert!(cmd.len() < 400 && cmd.contains("bytes in all"), "{cmd}");
    assert!(last["request"].as_str().unwrap_or("").len() < 700, "{last}");
    assert!(last["reason"].as_str().unwrap_or("").len() < 1200, "{last}");
    let log_grew = e.d.log().len() - log_before;
    assert!(log_grew < 20_000, "the daemon log grew by {log_grew} bytes");
    // A coarse denial (no rule grants the action) is audited too, bounded alike.
    let before = e.audit_len();
    e.refused(ALICE, &["system", "reload"], &["only root"]);
    let unknown = Command::new("runuser")
        .args(["-u", BOB, "--", "env"])
        .arg(format!("BPFMAN_SOCKET={}", e.d.socket.display()))
        .arg(BPFMAN)
        .args([
            "image",
            "pull",
            &format!("127.0.0.1:1/{}", "z".repeat(3000)),
        ])
        .output()
        .expect("runuser");
    assert!(!unknown.status.success());
    assert!(e.audit_len() - before < 10_000);
}

/// An alias name (`IFACE:x`, which the kernel's name ioctl would cut back to IFACE, so
/// that a name matching a tenant's glob lands on another interface) and names with white
/// space or control characters are refused before the kernel sees them.
#[test]
fn alias_and_control_character_interface_names_are_refused() {
    require_root!();
    let a = Netns::new();
    let e = Lab::with(Opts {
        netns: vec![a.path()],
        ..Opts::default()
    });
    let prog = e.load(ALICE, &e.p("alice-bpf/tc.o"), "tcx:tc_count");
    let p = prog.to_string();
    let ns = a.path();
    let tcx = |iface: &str| -> Vec<String> {
        [
            "attach", &p, "tcx", "-d", "ingress", "-i", iface, "-p", "100", "--netns", &ns,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let alias = format!("{}:x", a.peer_if);
    for bad in [alias.as_str(), "lo x", "l\u{1b}[31mo", ".."] {
        e.refused(ALICE, &strs(&tcx(bad)), &["is not an interface name"]);
    }
    e.refused(ALICE, &strs(&tcx("bpfsec-nothere")), &["does not exist"]);
    let ok = e.ok(ALICE, &strs(&tcx(&a.peer_if)));
    assert!(ok["link_id"].as_u64().is_some(), "{ok}");
}
