//! The `natter` binary: parse the command line, set up logging, run the server or an admin
//! command. No logic of its own.

use clap::Parser;
use natter::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match natter::config_file::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("natter: error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let log_config = simplelog::ConfigBuilder::new().set_target_level(log::LevelFilter::Off).build();
    let _ = simplelog::WriteLogger::init(cli.server.log_level, log_config, std::io::stderr());
    let result = match cli.command {
        Some(Command::User(cmd)) => natter::admin::user(&cli.db, cmd, cli.server.hash_params()),
        Some(Command::Backup { to, force }) => natter::admin::backup(&cli.db, &to, force),
        None => natter::net::serve(cli.server.into_config(cli.db)).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: error: {e}");
            ExitCode::FAILURE
        }
    }
}
