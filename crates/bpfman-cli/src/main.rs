//! `bpfman`: the daemon (`bpfman daemon`, the `bpfman-daemon` crate) and its command-line
//! client (everything else). The client reaches the daemon only through `bpfman-client`.

mod args;
mod client;
mod image;
mod output;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Daemon(d) => bpfman_daemon::run(bpfman_daemon::Options {
            config: d.config,
            runtime_dir: d.runtime_dir,
            socket: cli.socket,
        }),
        cmd => {
            client::set_on_behalf_of(cli.on_behalf_of_namespace);
            client::run(cmd, cli.socket, cli.output)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
