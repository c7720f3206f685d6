//! Settings of the long-running commands (`fillmesh node`, `fillmesh tracker`) from four
//! layers: the command line over the environment (`FILLMESH_<KEY>`) over a TOML file
//! (`--config FILE`) over the defaults.
//!
//! Every flag of those commands is a setting with a key of the same name in snake case (the
//! clap id: `--upload-rate` is `upload_rate`), so a new flag is a key and a variable with no
//! more code. The file is turned into arguments and parsed by the same clap parsers as the
//! command line: one meaning for a value wherever it comes from. Only actions (`--config`,
//! `--print-config`, `--print-id`, help) are not settings.
//!
//! `fillmesh config check FILE` runs every check a start would, and more, without starting:
//! TOML syntax, unknown keys (with the nearest known name), the type and value of each key
//! (with its line), missing keys, and conflicting or impossible combinations.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

/// Environment variables of the settings start with this: `FILLMESH_UPLOAD_RATE`.
pub const ENV_PREFIX: &str = "FILLMESH_";

/// Arguments that do something rather than set something: no key, no variable.
const ACTIONS: &[&str] = &["config", "print_config", "print_id", "help", "version"];

/// A config file larger than this is refused before it is parsed: a real one is a few KB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A command whose settings come from the layers: its clap arguments and what they become.
pub trait Settings: Args + FromArgMatches + Sized {
    /// What the command runs with.
    type Config;
    /// Conflicting or impossible values (every one found, each naming its flags), then the
    /// configuration. Reads nothing but the files the settings name.
    fn config(self) -> Result<Self::Config, Vec<String>>;
    /// `--print-id`: the data directory whose identity to print instead of running.
    fn print_id(&self) -> Option<&Path>;
    /// `--print-config`: print the settings instead of running.
    fn print_config(&self) -> bool;
}

/// What a long-running command does first: its settings from the layers (clap's own errors,
/// help and version printed and exited on, as clap does), and `--print-id` or
/// `--print-config` done instead of running (`None`).
pub fn start<A: Settings>(name: &'static str, tail: &[OsString]) -> anyhow::Result<Option<A::Config>> {
    let resolved = match resolve::<A>(name, tail) {
        Err(ConfigError::Clap(e)) => e.exit(),
        other => other?,
    };
    if let Some(data) = resolved.args.print_id() {
        // `--print-id`: the PeerId of the identity kept there (made if there is none yet).
        let key = fillmesh_net::identity::load_or_create(data)?;
        fillmesh_net::say!("{}", fillmesh_net::identity::peer_id(&key));
        return Ok(None);
    }
    if resolved.args.print_config() {
        print!("{}", resolved.print());
        return Ok(None);
    }
    Ok(Some(resolved.config()?))
}

/// One thing wrong with a configuration, at its line of the file when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file's path.
    pub file: PathBuf,
    /// 1-based line of the key (or of the syntax error), when the problem has one place.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Why settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line itself (or help and version, which clap prints and exits on).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The file, or what the layers add up to.
    #[error("{}", render(.0))]
    Problems(Vec<Problem>),
    /// The settings without a file (no line to name).
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// The key of a setting: its clap id, `None` for actions and positionals.
fn key_of(arg: &Arg) -> Option<&str> {
    let id = arg.get_id().as_str();
    (arg.get_long().is_some() && !ACTIONS.contains(&id)).then_some(id)
}

/// The environment variable of a key.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// `A`'s command named `name`, every setting with its environment variable.
pub fn command<A: Args>(name: &'static str) -> Command {
    with_env(A::augment_args(Command::new(name).bin_name(format!("fillmesh {name}"))))
}

fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| match key_of(&arg).map(env_name) {
        Some(var) => arg.env(var),
        None => arg,
    })
}

/// A parsed config file: each key with its line and value, in the file's order.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    line: usize,
    value: toml::Value,
}

impl ConfigFile {
    /// Reads and parses `path` (TOML, top-level keys only).
    pub fn read(path: &Path) -> Result<Self, Vec<Problem>> {
        let problem = |line, message: String| vec![Problem { file: path.to_path_buf(), line, message }];
        let size = std::fs::metadata(path).map_err(|e| problem(None, format!("cannot read it: {e}")))?.len();
        if size > MAX_FILE_BYTES {
            return Err(problem(None, format!("{size} bytes; a config file is at most {MAX_FILE_BYTES}")));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| problem(None, format!("cannot read it: {e}")))?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<Problem>> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> = toml::from_str(text)
            .map_err(|e| {
                // toml's message starts with its own "TOML parse error at line N" and a
                // drawing of the line: keep the reason, the line goes in front.
                let message = e.message().trim().to_owned();
                vec![Problem {
                    file: path.to_path_buf(),
                    line: e.span().map(|s| line_of(s.start)),
                    message: format!("not valid TOML: {message}"),
                }]
            })?;
        let mut entries: Vec<Entry> = table
            .into_iter()
            .map(|(k, v)| Entry { line: line_of(k.span().start), key: k.into_inner(), value: v.into_inner() })
            .collect();
        entries.sort_by_key(|e| e.line);
        Ok(Self { path: path.to_path_buf(), entries })
    }

    /// The keys of the file, each with its line.
    pub fn keys(&self) -> impl Iterator<Item = (&str, usize)> {
        self.entries.iter().map(|e| (e.key.as_str(), e.line))
    }

    fn problem(&self, line: Option<usize>, message: String) -> Problem {
        Problem { file: self.path.clone(), line, message }
    }

    /// The file's settings as arguments for `cmd`, every value checked by its flag's own
    /// parser; the keys `overridden` says are set elsewhere are checked but left out.
    fn arguments(&self, cmd: &Command, overridden: impl Fn(&str) -> bool) -> (Vec<OsString>, Vec<Problem>) {
        let mut argv = Vec::new();
        let mut problems = Vec::new();
        let known: Vec<&Arg> = cmd.get_arguments().filter(|a| key_of(a).is_some()).collect();
        for entry in &self.entries {
            let key = entry.key.replace('-', "_");
            let Some(arg) = known.iter().find(|a| a.get_id() == key.as_str()) else {
                let message = match nearest(&key, known.iter().filter_map(|a| key_of(a))) {
                    Some(near) => format!("unknown key `{}`; did you mean `{near}`?", entry.key),
                    None => format!("unknown key `{}`", entry.key),
                };
                problems.push(self.problem(Some(entry.line), message));
                continue;
            };
            let long = arg.get_long().unwrap_or(&key);
            match self.values(entry, arg) {
                Err(message) => problems.push(self.problem(Some(entry.line), message)),
                Ok(_) if overridden(&key) => {}
                Ok(Values::Flag(on)) => {
                    if on {
                        argv.push(format!("--{long}").into());
                    }
                }
                Ok(Values::List(values)) => {
                    argv.extend(values.into_iter().map(|v| OsString::from(format!("--{long}={v}"))))
                }
            }
        }
        (argv, problems)
    }

    /// An entry's values as the flag takes them, each checked by the flag's parser.
    fn values(&self, entry: &Entry, arg: &Arg) -> Result<Values, String> {
        let key = &entry.key;
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return match entry.value {
                toml::Value::Boolean(on) => Ok(Values::Flag(on)),
                ref other => Err(format!("`{key}` is true or false, not {}", describe(other))),
            };
        }
        let many = matches!(arg.get_action(), ArgAction::Append);
        let items: Vec<&toml::Value> = match &entry.value {
            toml::Value::Array(items) if many => items.iter().collect(),
            toml::Value::Array(_) => return Err(format!("`{key}` takes one value, not a list")),
            one => vec![one],
        };
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let text = match item {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(format!("`{key}` takes text or a number, not {}", describe(other))),
            };
            if let Err(e) = parse_one(arg, &text) {
                return Err(format!("`{key} = {}`: {}", toml_string(&text), clap_reason(&e)));
            }
            values.push(text);
        }
        Ok(Values::List(values))
    }

    /// `message` with the lines of the keys it names as flags (`--tracker-id`), for errors
    /// found in what the layers add up to rather than in one value.
    fn placed(&self, cmd: &Command, message: &str) -> Problem {
        let named: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|entry| {
                let key = entry.key.replace('-', "_");
                cmd.get_arguments().any(|a| {
                    a.get_id() == key.as_str() && a.get_long().is_some_and(|l| names_flag(message, l))
                })
            })
            .collect();
        let message = message.trim().to_owned();
        match named.as_slice() {
            [] => self.problem(None, message),
            [one] => self.problem(Some(one.line), message),
            many => {
                let at: Vec<String> =
                    many.iter().map(|e| format!("`{}` at line {}", e.key, e.line)).collect();
                self.problem(None, format!("{message} (set in the file: {})", at.join(", ")))
            }
        }
    }
}

/// Parses one value as `arg`'s parser does, alone (without the relations to other flags).
fn parse_one(arg: &Arg, text: &str) -> Result<(), clap::Error> {
    let id = arg.get_id().clone();
    let long = arg.get_long().unwrap_or(id.as_str()).to_owned();
    let mut alone =
        Arg::new(id).long(long.clone()).action(ArgAction::Set).value_parser(arg.get_value_parser().clone());
    if let Some(delimiter) = arg.get_value_delimiter() {
        alone = alone.value_delimiter(delimiter).action(ArgAction::Append);
    }
    let argv = [OsString::from("check"), OsString::from(format!("--{long}={text}"))];
    Command::new("check").arg(alone).try_get_matches_from(argv).map(|_| ())
}

enum Values {
    Flag(bool),
    List(Vec<String>),
}

/// Whether `message` names the flag `--long` (and not a longer one it starts).
fn names_flag(message: &str, long: &str) -> bool {
    let flag = format!("--{long}");
    message.match_indices(&flag).any(|(at, _)| {
        let next = message[at + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-')
    })
}

fn describe(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "text",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// A TOML basic string of `text` (JSON's escapes are TOML's).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

/// The reason in a clap error, without clap's "error:" and usage lines.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid value");
    first.trim_start_matches("error:").trim().to_owned()
}

/// The known key nearest to `key`, when one is near enough to be a typo of it.
fn nearest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Settings resolved from the layers, and where each came from.
#[derive(Debug)]
pub struct Resolved<A> {
    /// The settings.
    pub args: A,
    matches: ArgMatches,
    cmd: Command,
    file: Option<ConfigFile>,
    /// The keys the file set (and neither the command line nor the environment did).
    from_file: Vec<String>,
}

/// Resolves `A`'s settings for the command `name` from its command-line arguments `tail`
/// (after the command's name), the environment and the file `--config` names.
pub fn resolve<A: Settings>(name: &'static str, tail: &[OsString]) -> Result<Resolved<A>, ConfigError> {
    let cmd = command::<A>(name);
    let argv = |middle: &[OsString]| -> Vec<OsString> {
        std::iter::once(OsString::from(name))
            .chain(middle.iter().cloned())
            .chain(tail.iter().cloned())
            .collect()
    };
    // A first look, errors ignored (the file may hold required keys): where the file is and
    // which keys the command line and the environment set.
    let first = cmd.clone().ignore_errors(true).try_get_matches_from(argv(&[]))?;
    let path = first.get_one::<PathBuf>("config").cloned();
    let overridden = |key: &str| {
        matches!(first.value_source(key), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    let (file, extra, from_file) = match &path {
        None => (None, Vec::new(), Vec::new()),
        Some(path) => {
            let file = ConfigFile::read(path).map_err(ConfigError::Problems)?;
            let (extra, problems) = file.arguments(&cmd, overridden);
            if !problems.is_empty() {
                return Err(ConfigError::Problems(problems));
            }
            let from_file =
                file.keys().map(|(k, _)| k.replace('-', "_")).filter(|k| !overridden(k)).collect();
            (Some(file), extra, from_file)
        }
    };
    let matches = cmd.clone().try_get_matches_from(argv(&extra))?;
    let args = A::from_arg_matches(&matches)?;
    Ok(Resolved { args, matches, cmd, file, from_file })
}

impl<A: Settings> Resolved<A> {
    /// The configuration, its problems placed at their lines of the file.
    pub fn config(self) -> Result<A::Config, ConfigError> {
        let Resolved { args, cmd, file, .. } = self;
        args.config().map_err(|problems| match &file {
            Some(file) => ConfigError::Problems(problems.iter().map(|p| file.placed(&cmd, p)).collect()),
            None => ConfigError::Invalid(problems),
        })
    }

    /// The effective settings as a config file: every key with its value and, in a comment,
    /// where it came from. It reads back as the same settings.
    pub fn print(&self) -> String {
        let mut out = String::from(
            "# The effective configuration: command line over environment over file over defaults.\n",
        );
        for arg in self.cmd.get_arguments() {
            let Some(key) = key_of(arg) else { continue };
            let source = match self.matches.value_source(key) {
                Some(ValueSource::CommandLine) if self.from_file.iter().any(|k| k == key) => {
                    "file".to_owned()
                }
                Some(ValueSource::CommandLine) => "command line".to_owned(),
                Some(ValueSource::EnvVariable) => format!("environment {}", env_name(key)),
                Some(ValueSource::DefaultValue) => "default".to_owned(),
                _ => "unset".to_owned(),
            };
            let raw: Vec<String> = self
                .matches
                .get_raw(key)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
            let line = if flag {
                let on = raw.first().is_some_and(|v| v == "true");
                format!("{key} = {on}")
            } else if raw.is_empty() {
                format!("# {key} =")
            } else if matches!(arg.get_action(), ArgAction::Append) {
                let items: Vec<String> = raw.iter().map(|v| value_text(v)).collect();
                format!("{key} = [{}]", items.join(", "))
            } else {
                format!("{key} = {}", value_text(&raw[0]))
            };
            out.push_str(&format!("{line:<48} # {source}\n"));
        }
        out
    }
}

/// A value as TOML: integers bare, everything else a string (the layers read both alike).
fn value_text(raw: &str) -> String {
    match raw.parse::<i64>() {
        Ok(n) if n.to_string() == raw => raw.to_owned(),
        _ => toml_string(raw),
    }
}

/// Checks the file at `path` as `A`'s settings, as a start would and without the
/// environment: every problem found, or the number of keys it sets.
pub fn check<A: Settings>(name: &'static str, path: &Path) -> Result<usize, Vec<Problem>> {
    let file = ConfigFile::read(path)?;
    let cmd = A::augment_args(Command::new(name));
    let (argv, problems) = file.arguments(&cmd, |_| false);
    if !problems.is_empty() {
        return Err(problems);
    }
    let matches = cmd
        .clone()
        .try_get_matches_from(std::iter::once(OsString::from(name)).chain(argv))
        .map_err(|e| vec![file.placed(&cmd, &clap_message(&e))])?;
    let args = A::from_arg_matches(&matches).map_err(|e| vec![file.placed(&cmd, &clap_message(&e))])?;
    args.config().map_err(|problems| problems.iter().map(|p| file.placed(&cmd, p)).collect::<Vec<_>>())?;
    Ok(file.entries.len())
}

/// A clap error in config terms: "missing key `data`" rather than "`--data <DATA>` not
/// provided"; other errors keep clap's words, which name the flags.
fn clap_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
        if let Some(ContextValue::Strings(missing)) = e.get(ContextKind::InvalidArg) {
            let keys: Vec<String> = missing
                .iter()
                .map(|m| {
                    let long = m.trim_start_matches("--").split([' ', '<']).next().unwrap_or(m);
                    format!("`{}`", long.replace('-', "_"))
                })
                .collect();
            return format!(
                "missing key {} (it has no default, or another key set needs it)",
                keys.join(", ")
            );
        }
    }
    clap_reason(e)
}

/// How many of the file's keys are not settings of `A`: to tell which command a file is for.
pub fn unknown_keys<A: Args>(file: &ConfigFile) -> usize {
    let cmd = A::augment_args(Command::new("x"));
    file.keys()
        .filter(|(k, _)| {
            let k = k.replace('-', "_");
            !cmd.get_arguments().any(|a| key_of(a) == Some(k.as_str()))
        })
        .count()
}
