//! `--config FILE`: the flags' settings in a TOML file.
//!
//! Keys are the flags' long names (`listen`, `max-frame`, `smtp-url`, ...). The file fills
//! in what the command line and the `NATTER_*` variables leave open: a flag given on the
//! command line wins, then its environment variable, then the file, then the default. It
//! works by turning the file into flags placed before the real ones. An unknown key, or a
//! value that is not a string, number or boolean, is an error naming the key.

use clap::CommandFactory;
use std::ffi::OsString;
use std::path::Path;

/// The command line with the config file's settings added (when there is one).
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(path) = config_path(&args) else { return Ok(args) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let known: Vec<String> = crate::cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|l| !matches!(l.as_str(), "config" | "help" | "version"))
        .collect();
    let mut from_file = Vec::new();
    for (key, value) in table {
        if !known.contains(&key) {
            return Err(format!("{}: unknown key `{key}`", path.display()));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(format!("{}: key `{key}` must be a string, a number or a boolean", path.display())),
        };
        let flag = format!("--{key}");
        let on_command_line = args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        });
        let env = format!("NATTER_{}", key.to_uppercase().replace('-', "_"));
        if on_command_line || std::env::var_os(&env).is_some() {
            continue;
        }
        from_file.push(OsString::from(flag));
        from_file.push(OsString::from(value));
    }
    let mut out = Vec::with_capacity(args.len() + from_file.len());
    let mut rest = args.into_iter();
    out.extend(rest.next());
    out.extend(from_file);
    out.extend(rest);
    Ok(out)
}

/// `--config PATH`, `--config=PATH` or `NATTER_CONFIG`.
fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(|p| Path::new(p).to_path_buf());
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(p.into());
        }
    }
    std::env::var_os("NATTER_CONFIG").map(Into::into)
}
