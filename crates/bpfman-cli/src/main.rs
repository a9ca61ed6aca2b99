//! `bpfman`: the daemon (`bpfman daemon`) and its command-line client (everything else).
//! The client speaks only the gRPC API over the daemon's unix socket.

mod admission;
mod args;
mod client;
mod daemon;
mod image;
mod output;
mod server;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Daemon(d) => daemon::run(d, cli.socket),
        cmd => client::run(cmd, cli.socket, cli.output),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
