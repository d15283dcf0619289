//! The `--config FILE` layer: a TOML table whose keys are the flag names.
//!
//! Precedence is flag > environment variable > file > default. clap already
//! resolves the first two and the last one; it tells for every argument where
//! its value came from (`ArgMatches::value_source`), so the file only fills
//! the arguments whose value is still the default: each such key is turned
//! into one `--key=value` argument and the command line is parsed again.
//! Every value therefore goes through the same parser, range and message as
//! the flag, and a key that is not a flag is refused instead of ignored (a
//! typo in a config file must not silently keep a default).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::{Command, Config, ConfigCommand};

/// Largest config file read, so a wrong path (a log, a device) fails fast.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Arguments that are not settings: never read from a file, never printed.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// Where a setting's value came from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// A parsed, validated configuration and where each setting came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// Setting (flag name without dashes) → where its value came from.
    pub sources: BTreeMap<String, Source>,
    /// Warnings to log once logging is set up.
    pub notes: Vec<String>,
}

/// Why there is no configuration to run with.
#[derive(Debug)]
pub enum LoadError {
    /// `--help` or `--version`: print it, exit 0.
    Display(clap::Error),
    /// A bad flag, variable, file or value: one line, exit 2.
    Invalid(String),
}

/// clap's first message line without its `error: ` prefix: the line that
/// names the flag, for an operator reading a journal.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error: invalid arguments")
        .trim_start_matches("error: ")
        .to_string()
}

fn parse(args: &[OsString]) -> Result<clap::ArgMatches, LoadError> {
    Config::command()
        .try_get_matches_from(args)
        .map_err(|e| match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                LoadError::Display(e)
            }
            _ => LoadError::Invalid(first_line(&e)),
        })
}

/// The settings: every argument of the top-level command except `--config`,
/// `--help` and `--version`, as (id, long name, is secret).
pub(crate) fn settings() -> Vec<(String, String, bool)> {
    Config::command()
        .get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            // A secret's value is not shown by --help; not by `config check` either.
            Some((a.get_id().to_string(), long, a.is_hide_env_values_set()))
        })
        .collect()
}

/// Parse the command line, the environment and the config file it names (or
/// the FILE of `config check FILE`), then check the cross-flag rules.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if args.is_empty() {
        args.push("stentor".into());
    }
    let matches = parse(&args)?;
    let checked = match matches.subcommand() {
        Some(("config", sub)) => match sub.subcommand() {
            Some(("check", check)) => check.get_one::<PathBuf>("file").cloned(),
            _ => None,
        },
        _ => None,
    };
    let file = checked.or_else(|| matches.get_one::<PathBuf>("config").cloned());

    let settings = settings();
    let mut sources: BTreeMap<String, Source> = settings
        .iter()
        .map(|(id, long, _)| {
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Default,
            };
            (long.clone(), source)
        })
        .collect();

    // RUST_LOG is the level's weakest variable: below the flag and
    // STENTOR_LOG_LEVEL, above the file (an environment beats a file).
    let mut notes = Vec::new();
    if sources.get("log-level") == Some(&Source::Default) {
        if let Some(rust_log) = std::env::var_os("RUST_LOG").filter(|v| !v.is_empty()) {
            let text = rust_log.to_string_lossy().into_owned();
            match crate::log::parse_filter(&text) {
                Ok(_) => {
                    args.insert(1, format!("--log-level={text}").into());
                    sources.insert("log-level".into(), Source::Env);
                }
                // Ignored, not fatal: RUST_LOG is often set for other programs.
                Err(e) => notes.push(format!("RUST_LOG ignored: {e}")),
            }
        }
    }

    let mut from_file: Vec<String> = Vec::new();
    if let Some(path) = &file {
        let table = read_table(path)?;
        let mut extra: Vec<OsString> = Vec::new();
        for (raw_key, value) in &table {
            let key = raw_key.replace('_', "-");
            let Some(source) = sources.get(&key).copied() else {
                return Err(LoadError::Invalid(format!(
                    "{}: unknown key '{raw_key}' (keys are the flag names of `stentor --help`, \
                     e.g. max-connections)",
                    path.display()
                )));
            };
            if from_file.contains(&key) {
                return Err(LoadError::Invalid(format!(
                    "{}: key '{raw_key}' is set twice (as '{key}' and with underscores)",
                    path.display()
                )));
            }
            from_file.push(key.clone());
            let this = file_args(path, raw_key, &key, value)?;
            // Each key alone through clap: the message names this key (and,
            // through the flag, its range), whatever the other keys hold.
            let mut alone = vec![OsString::from("stentor")];
            alone.extend(this.iter().cloned());
            if let Err(e) = Config::command().try_get_matches_from(&alone) {
                return Err(LoadError::Invalid(format!(
                    "{}: key '{raw_key}': {}",
                    path.display(),
                    first_line(&e)
                )));
            }
            if source == Source::Default {
                sources.insert(key, Source::File);
                extra.extend(this);
            }
        }
        // Before any subcommand, where top-level flags belong.
        args.splice(1..1, extra);
    }

    let matches = parse(&args)?;
    let config =
        Config::from_arg_matches(&matches).map_err(|e| LoadError::Invalid(first_line(&e)))?;
    if let Err(e) = config.validate() {
        // A cross-flag rule broken by a file value: say where it came from.
        let culprit = from_file.iter().find(|k| {
            sources.get(*k) == Some(&Source::File) && e.message.contains(&format!("'--{k}'"))
        });
        return Err(LoadError::Invalid(match (culprit, &file) {
            (Some(key), Some(path)) => format!("{}: key '{key}': {e}", path.display()),
            _ => e.message,
        }));
    }
    Ok(Loaded {
        config,
        file,
        sources,
        notes,
    })
}

/// Read and parse the file, refusing what cannot be a config file.
fn read_table(path: &Path) -> Result<toml::Table, LoadError> {
    let fail = |why: String| LoadError::Invalid(format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        return Err(fail(format!(
            "larger than {CONFIG_FILE_BYTES_MAX} bytes, not a config file"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    text.parse::<toml::Table>().map_err(|e| {
        // toml's message spans several lines (a caret under the column);
        // keep the first and the explanation, on one line.
        let message = e.to_string();
        let mut parts = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.ends_with('|'));
        let head = parts.next().unwrap_or("invalid TOML").to_string();
        let tail: Vec<&str> = parts
            .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        fail(
            format!("not valid TOML: {head} {}", tail.join(" "))
                .trim_end()
                .to_string(),
        )
    })
}

/// The `--key=value` arguments one file entry stands for.
fn file_args(
    path: &Path,
    raw_key: &str,
    key: &str,
    value: &toml::Value,
) -> Result<Vec<OsString>, LoadError> {
    let scalar = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            _ => None,
        }
    };
    let wrong = |what: &str| {
        LoadError::Invalid(format!(
            "{}: key '{raw_key}': expected {what}",
            path.display()
        ))
    };
    match value {
        toml::Value::Boolean(true) => Ok(vec![format!("--{key}").into()]),
        toml::Value::Boolean(false) => Ok(Vec::new()),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                scalar(v)
                    .map(|s| OsString::from(format!("--{key}={s}")))
                    .ok_or_else(|| wrong("an array of strings or numbers"))
            })
            .collect(),
        v => scalar(v)
            .map(|s| vec![OsString::from(format!("--{key}={s}"))])
            .ok_or_else(|| wrong("a string, a number, a boolean or an array")),
    }
}

/// The effective configuration as TOML that `--config` reads back: every
/// setting in `--help` order, where it came from in a comment, secrets
/// replaced by `"<redacted>"`, unset optional settings commented out.
pub fn effective_toml(loaded: &Loaded) -> String {
    let values = toml::Table::try_from(&loaded.config).unwrap_or_default();
    let mut out =
        String::from("# stentor: effective configuration (flag > env > file > default)\n");
    if let Some(path) = &loaded.file {
        out.push_str(&format!("# file: {}\n", path.display()));
    }
    for (_, long, secret) in settings() {
        let source = loaded
            .sources
            .get(&long)
            .copied()
            .unwrap_or(Source::Default)
            .name();
        match values.get(&long) {
            None => out.push_str(&format!("# {long} is not set ({source})\n")),
            // The broker URL serialises without its password: the host is
            // worth seeing.
            Some(value) if secret && long == "broker" => {
                out.push_str(&format!("{long} = {value}  # {source}\n"));
            }
            Some(_) if secret => {
                out.push_str(&format!("{long} = \"<redacted>\"  # {source}\n"));
            }
            Some(value) => out.push_str(&format!("{long} = {value}  # {source}\n")),
        }
    }
    out
}

/// The shipped default config file (`deploy/stentor.toml`, installed as
/// `/etc/stentor/stentor.toml`): every setting with its help, its variable
/// and its default, commented out, so the file documents and changes nothing
/// until an operator uncomments a line.
pub fn default_toml() -> String {
    let mut out = String::from(
        "# stentor configuration (TOML). Read with `stentor --config FILE`.\n\
         #\n\
         # Keys are the flag names of `stentor --help` (`max-connections` or\n\
         # `max_connections`). A flag beats its STENTOR_* variable, which beats this\n\
         # file, which beats the built-in default. Unknown keys and bad values stop\n\
         # the server with exit code 2 and a line naming the key and this file;\n\
         # `stentor config check FILE` validates a file and prints the result.\n\
         # Every line below is commented out at its default: uncomment to change.\n\
         # Generated by `stentor generate config`.\n",
    );
    let cmd = Config::command();
    let mut heading = None;
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        if arg.get_help_heading() != heading {
            heading = arg.get_help_heading();
            if let Some(h) = heading {
                out.push_str(&format!("\n# ==== {h} ====\n"));
            }
        }
        out.push('\n');
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        for line in wrap(&help, 76) {
            out.push_str(&format!("# {line}\n"));
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# Variable: {}\n", env.to_string_lossy()));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let value = match defaults.as_slice() {
            _ if matches!(arg.get_action(), clap::ArgAction::SetTrue) => "false".to_string(),
            [] if arg.get_value_delimiter().is_some() => "[]".to_string(),
            [] => "\"\"".to_string(),
            [one] => toml_scalar(one),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|v| toml_scalar(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push_str(&format!("#{long} = {value}\n"));
    }
    out
}

/// A default value as TOML: a number stays a number, anything else a string.
fn toml_scalar(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.to_string()
    } else {
        toml::Value::String(text.to_string()).to_string()
    }
}

/// Greedy word wrap for comments.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

impl Loaded {
    /// True for `stentor config check FILE`.
    pub fn is_check(&self) -> bool {
        matches!(
            self.config.command,
            Some(Command::Config(ConfigCommand::Check { .. }))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the target's temp directory, removed when dropped.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!("stentor-config-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load_args(args: &[&str]) -> Result<Loaded, String> {
        load(std::iter::once("stentor").chain(args.iter().copied())).map_err(|e| match e {
            LoadError::Display(e) => e.to_string(),
            LoadError::Invalid(m) => m,
        })
    }

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let f = TempFile::new(
            "fill.toml",
            "max-connections = 5000\nheartbeat_ms = 2500\nlisten = \"127.0.0.1:9000\"\n\
             cors-origin = [\"https://a.example\", \"https://b.example\"]\n",
        );
        let l = load_args(&["--config", &f.arg(), "--heartbeat-ms", "700"]).unwrap();
        assert_eq!(l.config.max_connections, 5000);
        assert_eq!(l.config.heartbeat_ms, 700, "the flag beats the file");
        assert_eq!(l.config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(l.config.cors_origin.len(), 2);
        assert_eq!(l.sources["max-connections"], Source::File);
        assert_eq!(l.sources["heartbeat-ms"], Source::Flag);
        assert_eq!(l.sources["retry-ms"], Source::Default);
        assert_eq!(l.config.retry_ms, 3000);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_file() {
        let f = TempFile::new("typo.toml", "max-conections = 5\n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(
            e.contains("max-conections") && e.contains("typo.toml"),
            "{e}"
        );

        let f = TempFile::new("range.toml", "workers = 9999\n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(
            e.contains("'workers'") && e.contains("range.toml") && e.contains("0..=256"),
            "{e}"
        );

        let f = TempFile::new("type.toml", "listen = { a = 1 }\n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(e.contains("'listen'") && e.contains("type.toml"), "{e}");

        let f = TempFile::new("syntax.toml", "listen = \n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(
            e.contains("syntax.toml") && e.contains("TOML") && !e.contains('\n'),
            "{e}"
        );

        let f = TempFile::new("twice.toml", "retry-ms = 1\nretry_ms = 2\n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(e.contains("twice"), "{e}");

        let f = TempFile::new("token.toml", "publish-token = \"short\"\n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(
            e.contains("'publish-token'") && e.contains("token.toml"),
            "{e}"
        );

        let f = TempFile::new("self.toml", "config = \"other.toml\"\n");
        let e = load_args(&["--config", &f.arg()]).unwrap_err();
        assert!(e.contains("unknown key 'config'"), "{e}");

        let e = load_args(&["--config", "/nonexistent/stentor.toml"]).unwrap_err();
        assert!(
            e.contains("/nonexistent/stentor.toml") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_is_refused_even_when_a_flag_overrides_it() {
        // The file is checked whole: it will be used on its own one day.
        let f = TempFile::new("shadowed.toml", "workers = 9999\n");
        let e = load_args(&["--config", &f.arg(), "--workers", "2"]).unwrap_err();
        assert!(e.contains("'workers'"), "{e}");
    }

    #[test]
    fn check_shows_the_broker_host_but_never_its_password() {
        let f = TempFile::new(
            "broker.toml",
            "broker = \"redis://app:hunter2-secret@10.0.0.5:6379/2\"\n",
        );
        let l = load_args(&["config", "check", &f.arg()]).unwrap();
        let text = effective_toml(&l);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("broker = \"redis://app:***@10.0.0.5:6379/2\"  # file"),
            "{text}"
        );
        let bad = TempFile::new("bad-broker.toml", "broker = \"http://h:1\"\n");
        let e = load_args(&["config", "check", &bad.arg()]).unwrap_err();
        assert!(e.contains("--broker"), "{e}");
    }

    #[test]
    fn check_prints_toml_that_reads_back_with_secrets_redacted() {
        let f = TempFile::new(
            "check.toml",
            "publish-token = \"0123456789abcdef-secret\"\nmax-connections = 4321\n",
        );
        let l = load_args(&["config", "check", &f.arg()]).unwrap();
        assert!(l.is_check());
        let text = effective_toml(&l);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("publish-token = \"<redacted>\""), "{text}");
        assert!(text.contains("max-connections = 4321  # file"), "{text}");
        assert!(text.contains("# subscribe-token is not set"), "{text}");
        let table: toml::Table = text.parse().expect("the output is TOML");
        // Every setting is there, except unset optional ones.
        for (_, long, _) in settings() {
            assert!(
                table.contains_key(&long) || text.contains(&format!("# {long} is not set")),
                "{long} missing from\n{text}"
            );
        }
        // And it reads back (the secret aside) to the same configuration.
        let mut table = table;
        table.remove("publish-token");
        let back = TempFile::new("back.toml", &toml::to_string(&table).unwrap());
        let l2 = load_args(&["--config", &back.arg()]).unwrap();
        assert_eq!(l2.config.max_connections, 4321);
        assert_eq!(l2.config.listen, l.config.listen);
    }

    #[test]
    fn shipped_default_config_is_generated_and_changes_nothing() {
        let shipped = include_str!("../../../deploy/stentor.toml");
        assert_eq!(
            shipped,
            default_toml(),
            "deploy/stentor.toml is stale: cargo run -p stentor -- generate config > deploy/stentor.toml"
        );
        // Every line uncommented is still a valid file with the defaults.
        let uncommented: String = shipped
            .lines()
            .filter_map(|l| {
                l.strip_prefix('#')
                    .filter(|r| r.contains(" = ") && !r.starts_with(' '))
                    // An address or a path has no empty value: unset is its default.
                    .filter(|r| !r.starts_with("admin-listen") && !r.starts_with("history-file"))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let f = TempFile::new("uncommented.toml", &uncommented);
        let l = load_args(&["--config", &f.arg()]);
        // Empty tokens, keys and modes are not valid values: without them
        // the file loads to the defaults.
        let secret_or_key = |l: &str| {
            l.contains("token") || l.starts_with("jwt-") || l.starts_with("subscribe-auth")
        };
        let e = l.unwrap_err();
        assert!(
            ["token", "jwt", "subscribe-auth"]
                .iter()
                .any(|w| e.contains(w)),
            "{e}"
        );
        let without_tokens: String = uncommented
            .lines()
            .filter(|l| !secret_or_key(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = TempFile::new("defaults.toml", &without_tokens);
        let l = load_args(&["--config", &f.arg()]).unwrap();
        let d = load_args(&[]).unwrap();
        assert_eq!(
            format!("{:?}", l.config.listen),
            format!("{:?}", d.config.listen)
        );
        assert_eq!(
            toml::Table::try_from(&l.config).unwrap(),
            toml::Table::try_from(&d.config).unwrap()
        );
    }

    #[test]
    fn no_file_is_exactly_the_command_line() {
        let l = load_args(&[]).unwrap();
        assert!(l.file.is_none() && !l.is_check());
        assert!(l
            .sources
            .values()
            .all(|s| *s == Source::Default || *s == Source::Env));
    }
}
