//! Command-line syntax, following upstream bpfman's verbs and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bpfman",
    version,
    about = "Load, attach and manage eBPF programs through the bpfman daemon"
)]
pub struct Cli {
    /// The daemon's unix socket.
    #[arg(long, global = true, env = "BPFMAN_SOCKET", default_value = bpfman_client::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Act on behalf of this Kubernetes namespace (root only; what the node agent does for
    /// a namespaced BpfApplication): the request is decided by the policy rules naming the
    /// namespace and its programs and links are the namespace's. An extension.
    #[arg(
        long,
        global = true,
        env = "BPFMAN_ON_BEHALF_OF_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub on_behalf_of_namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the privileged daemon that serves the API.
    Daemon(DaemonArgs),
    /// Load eBPF programs from a file or an image (nothing is attached yet).
    #[command(subcommand)]
    Load(LoadCommand),
    /// Unload a program (its links are detached first).
    Unload {
        /// Kernel program id.
        id: u32,
    },
    /// Attach a loaded program to a hook.
    Attach(AttachArgs),
    /// Detach a link.
    Detach {
        /// Link id (from `attach` or `list links`).
        link_id: u32,
    },
    /// List programs or links.
    #[command(subcommand)]
    List(ListCommand),
    /// Show one program or link.
    #[command(subcommand)]
    Get(GetCommand),
    /// Daemon and kernel information.
    #[command(subcommand)]
    System(SystemCommand),
    /// Bytecode images: pull, list, inspect, rm (the daemon's cache); build, push, sign,
    /// verify, generate-key-pair (local, no daemon needed).
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// base64(user:password) for the registry (else ~/.docker/config.json, else anonymous).
    #[arg(short = 'r', long)]
    pub registry_auth: Option<String>,
    /// Reach this image's registry over plain HTTP (loopback registries always are).
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image into the daemon's cache (with a progress bar).
    Pull {
        /// Image reference.
        #[arg(required_unless_present = "image_url")]
        image: Option<String>,
        /// Image reference (upstream's flag form).
        #[arg(short = 'i', long, conflicts_with = "image")]
        image_url: Option<String>,
        /// Always, IfNotPresent or Never.
        #[arg(short = 'p', long, default_value = "Always")]
        pull_policy: String,
        /// base64(user:password) for the registry.
        #[arg(short = 'r', long)]
        registry_auth: Option<String>,
    },
    /// List the daemon's cached images.
    List,
    /// Show a cached image: programs, maps, digests, signature status.
    Inspect { image: String },
    /// Remove cached images by reference or digest (root only).
    Rm { image: String },
    /// Build a bytecode image from ELF objects into a local OCI layout (no docker needed).
    Build {
        /// The eBPF object for this host's architecture.
        #[arg(short = 'b', long, required_unless_present = "bytecode_for")]
        bytecode: Option<PathBuf>,
        /// ARCH=FILE.o, once per architecture: builds a multi-arch index.
        #[arg(long = "bytecode-for", value_name = "ARCH=FILE")]
        bytecode_for: Vec<String>,
        /// The image reference to name it, e.g. 127.0.0.1:5000/xdp/pass:v1.
        #[arg(short = 't', long)]
        tag: String,
        /// TYPE:FUNCTION labels (default: every program the ELF holds).
        #[arg(long, num_args = 1.., value_name = "TYPE:FUNC")]
        programs: Vec<String>,
        /// NAME:TYPE map labels (default: every map the ELF defines).
        #[arg(long, num_args = 1.., value_name = "NAME:TYPE")]
        maps: Vec<String>,
        /// The OCI layout directory to build into.
        #[arg(long, env = "BPFMAN_IMAGE_DIR")]
        layout: Option<PathBuf>,
    },
    /// Push a built image to its registry.
    Push {
        /// The image (as tagged by `image build`).
        image: String,
        /// Push under another reference.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long, env = "BPFMAN_IMAGE_DIR")]
        layout: Option<PathBuf>,
    },
    /// Sign an image in its registry, cosign-style (password in COSIGN_PASSWORD).
    Sign {
        /// Private key (cosign's encrypted PEM, or PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Verify an image's cosign signatures against public keys.
    Verify {
        /// Public key (PEM), once or more.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Make a cosign key pair PREFIX.key (encrypted with COSIGN_PASSWORD) and PREFIX.pub.
    GenerateKeyPair {
        #[arg(long, default_value = "cosign")]
        output_key_prefix: String,
    },
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Configuration file (TOML).
    #[arg(long, default_value = "/etc/bpfman/bpfman.toml")]
    pub config: PathBuf,
    /// Runtime directory: store in db/, bpffs at fs/.
    #[arg(long, default_value = "/run/bpfman")]
    pub runtime_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct LoadCommon {
    /// TYPE:FUNCTION[:ATTACH_FUNCTION], once per program (the kernel function for
    /// fentry/fexit, the hook for lsm, e.g. lsm:my_prog:file_open).
    #[arg(long = "programs", required = true, num_args = 1.., value_name = "TYPE:FUNC[:ATTACH_FN]")]
    pub programs: Vec<String>,
    /// Global variable override NAME=HEX (bytes in the program's byte order).
    #[arg(short = 'g', long = "global", num_args = 1.., value_name = "NAME=HEX")]
    pub global: Vec<String>,
    /// Metadata KEY=VALUE[,KEY=VALUE...].
    #[arg(short = 'm', long = "metadata", value_name = "KEY=VALUE,...")]
    pub metadata: Vec<String>,
    /// Application name (stored as metadata bpfman_application).
    #[arg(short = 'a', long)]
    pub application: Option<String>,
    /// Share the maps of this already-loaded program.
    #[arg(long)]
    pub map_owner_id: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum LoadCommand {
    /// Load from an object file on the daemon's machine.
    File {
        /// Path of the eBPF ELF object.
        #[arg(short = 'p', long)]
        path: PathBuf,
        #[command(flatten)]
        common: LoadCommon,
    },
    /// Load from an OCI image.
    Image {
        /// Image reference, e.g. quay.io/bpfman-bytecode/xdp_pass:latest.
        #[arg(short = 'i', long)]
        image_url: String,
        /// Always, IfNotPresent or Never.
        #[arg(short = 'p', long, default_value = "IfNotPresent")]
        pull_policy: String,
        /// base64(user:password) for the registry.
        #[arg(short = 'r', long)]
        registry_auth: Option<String>,
        #[command(flatten)]
        common: LoadCommon,
    },
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Kernel program id (from `load`).
    pub program_id: u32,
    #[command(subcommand)]
    pub target: AttachTarget,
}

#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Interface name.
    #[arg(short = 'i', long)]
    pub iface: String,
    /// 1 (runs first) to 1000.
    #[arg(short = 'p', long, default_value_t = 1000)]
    pub priority: i32,
    /// Network namespace path (e.g. /var/run/netns/NAME).
    #[arg(short = 'n', long)]
    pub netns: Option<String>,
    /// Metadata KEY=VALUE[,KEY=VALUE...] on the link.
    #[arg(short = 'm', long)]
    pub metadata: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AttachTarget {
    /// XDP on an interface.
    Xdp {
        #[command(flatten)]
        net: NetArgs,
        /// Return codes that continue the chain: aborted, drop, pass, tx, redirect, dispatcher_return.
        #[arg(long, num_args = 1..)]
        proceed_on: Vec<String>,
    },
    /// TC on an interface (runs through TCX where the kernel has it).
    Tc {
        /// ingress or egress.
        #[arg(short = 'd', long)]
        direction: String,
        #[command(flatten)]
        net: NetArgs,
        /// Return codes that continue the chain: unspec, ok, reclassify, shot, pipe, stolen,
        /// queued, repeat, redirect, trap, dispatcher_return.
        #[arg(long, num_args = 1..)]
        proceed_on: Vec<String>,
    },
    /// TCX (kernel multi-program list) on an interface.
    Tcx {
        /// ingress or egress.
        #[arg(short = 'd', long)]
        direction: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// A tracepoint.
    Tracepoint {
        /// CATEGORY/NAME, e.g. syscalls/sys_enter_openat.
        #[arg(short = 't', long)]
        tracepoint: String,
        #[arg(short = 'm', long)]
        metadata: Vec<String>,
    },
    /// A kernel function (kretprobe when the program's section says so).
    Kprobe {
        #[arg(short = 'f', long)]
        fn_name: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(short = 'c', long)]
        container_pid: Option<i32>,
        #[arg(short = 'm', long)]
        metadata: Vec<String>,
    },
    /// A user-space function (uretprobe when the program's section says so).
    Uprobe {
        /// Binary or library path (or library name).
        #[arg(short = 't', long)]
        target: String,
        #[arg(short = 'f', long)]
        fn_name: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Only this process.
        #[arg(short = 'p', long)]
        pid: Option<i32>,
        /// Resolve the target inside this process's container.
        #[arg(short = 'c', long)]
        container_pid: Option<i32>,
        #[arg(short = 'm', long)]
        metadata: Vec<String>,
    },
    /// fentry (target given at load time).
    Fentry {
        #[arg(short = 'm', long)]
        metadata: Vec<String>,
    },
    /// fexit (target given at load time).
    Fexit {
        #[arg(short = 'm', long)]
        metadata: Vec<String>,
    },
    /// lsm (hook given at load time).
    Lsm {
        #[arg(short = 'm', long)]
        metadata: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ListCommand {
    /// Programs (bpfman's, or all with --all).
    Programs {
        /// Program type (xdp, tc, tracepoint, kprobe, ... or a kernel type name).
        #[arg(short = 'p', long)]
        program_type: Option<String>,
        /// Only programs with this application.
        #[arg(long)]
        application: Option<String>,
        /// KEY=VALUE[,KEY=VALUE...] that programs' metadata must match.
        #[arg(short = 'm', long)]
        metadata_selector: Vec<String>,
        /// Include programs not loaded by bpfman.
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Links.
    Links {
        /// Only links of this program.
        #[arg(long)]
        program_id: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub enum GetCommand {
    /// One program.
    Program { id: u32 },
    /// One link.
    Link { link_id: u32 },
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Kernel version, kernel features, daemon paths and version.
    Info,
    /// Re-read the daemon's config file and apply its policy (root only).
    Reload,
    /// Compare store, bpffs and kernel now; repair and report differences (root only).
    Reconcile,
}
