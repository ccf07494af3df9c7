//! Where settings come from: the environment, the settings file, and the documented defaults,
//! each turned into the nested form of [`super::Settings`] for figment to merge.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Num, Value};
use figment::{Figment, Provider};

use super::table::{self, SettingDoc, SECTIONS, SETTINGS};
use super::ConfigError;

/// Raw view of the settings, before they are typed.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The settings file, nested by section.
    pub(super) file: Dict,
    /// Environment variables that are settings, by name.
    pub(super) env: BTreeMap<String, String>,
    pub(super) unknown_env: Vec<UnknownVariable>,
}

/// An environment variable that looks meant for mailtally but is none of its keys: a typo
/// would otherwise leave the setting at its default without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    pub name: String,
    /// The known key it most likely means, when one is close.
    pub likely: Option<&'static str>,
}

/// `MAILTALLY_*` variables that are not settings: read by the scripts and the test harness.
const NON_SETTING_VARIABLES: &[&str] = &[
    "MAILTALLY_BIN",
    "MAILTALLY_PID",
    "MAILTALLY_KEEP_TEST_DB",
    "MAILTALLY_SOAK",
];

impl Sources {
    /// Reads the environment and, when given, the TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Exactly the documented names: `public_url` is warned about below, not read. Case is
        // kept by `lowercase(false)`, which must come after `filter_map` (that resets it).
        let env = Env::raw()
            .filter_map(|name| table::by_key(name.as_str()).map(|s| s.key.into()))
            .lowercase(false)
            .iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
        let unknown_env = unknown_variables(names);
        let file = match file {
            Some(path) => read_file(path)?,
            None => Dict::new(),
        };
        Ok(Sources {
            file,
            env,
            unknown_env,
        })
    }

    /// Environment variables that look like misspelt or unknown mailtally settings.
    pub fn unknown_variables(&self) -> &[UnknownVariable] {
        &self.unknown_env
    }

    /// Sources made only of the given pairs (tests, embedding).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Sources {
            file: Dict::new(),
            unknown_env: Vec::new(),
            env: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Defaults, then the file, then the environment, each later one winning per setting.
    pub(super) fn figment(&self) -> Figment {
        let mut env = Dict::new();
        for (name, value) in &self.env {
            if let Some(s) = table::by_key(name) {
                table::put(&mut env, s, Value::from(value.clone()));
            }
        }
        Figment::new()
            .merge(Serialized::defaults(table::defaults()))
            .merge(Serialized::defaults(&self.file))
            .merge(Serialized::defaults(env))
    }
}

/// The names among `names` that are no setting but look like one: `MAILTALLY_*`, a known key
/// in the wrong case, or within a typo or two of a known key.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<UnknownVariable> {
    let mut out: Vec<UnknownVariable> = names
        .into_iter()
        .filter(|name| table::by_key(name).is_none())
        .filter(|name| !NON_SETTING_VARIABLES.contains(&name.as_str()))
        .filter_map(|name| {
            let likely = likely_key(&name);
            let ours = name.to_ascii_uppercase().starts_with("MAILTALLY_");
            (likely.is_some() || ours).then_some(UnknownVariable { name, likely })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The known key `name` most likely means: the same key in another case, or the nearest key
/// within one edit (two for keys of 10 characters or more, where two typos are common and a
/// chance match with an unrelated variable is not).
pub fn likely_key(name: &str) -> Option<&'static str> {
    nearest(name, SETTINGS.iter().map(|s| s.key))
}

fn nearest(name: &str, candidates: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    candidates
        .map(|c| (edit_distance(&upper, &c.to_ascii_uppercase()), c))
        .filter(|(d, c)| *d <= if c.len() >= 10 { 2 } else { 1 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions
/// of adjacent characters (`UPSTREAM_ULR` is one edit from `UPSTREAM_URL`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The settings file, nested by section. A setting is written either as its environment
/// variable at the top level (`SMTP_LISTEN = "..."`, any case) or under its section
/// (`[relay]` `listen = "..."`); any other key is an error, so that a typo stops startup
/// instead of leaving a setting at its default.
fn read_file(path: &Path) -> Result<Dict, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let toml_error = |cause: figment::Error| ConfigError::Toml {
        path: path.to_owned(),
        cause: cause.kind.to_string(),
    };
    let top = Toml::string(&text)
        .data()
        .map_err(toml_error)?
        .into_values()
        .next()
        .unwrap_or_default();
    let unknown = |key: String, likely: Option<String>| ConfigError::UnknownKey {
        path: path.to_owned(),
        key,
        likely,
    };
    let mut out = Dict::new();
    let mut given: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut place = |s: &'static SettingDoc, written: String, value: Value| {
        if !is_scalar_or_list(&value) {
            return Err(ConfigError::BadType {
                path: path.to_owned(),
                key: written,
            });
        }
        if let Some(first) = given.insert(s.key, written.clone()) {
            return Err(ConfigError::Twice {
                path: path.to_owned(),
                first,
                second: written,
            });
        }
        table::put(&mut out, s, value);
        Ok(())
    };
    for (key, value) in top {
        if let Some(section) = SECTIONS.iter().find(|s| **s == key) {
            let Value::Dict(_, fields) = value else {
                return Err(ConfigError::NotSection {
                    path: path.to_owned(),
                    key,
                });
            };
            for (name, value) in fields {
                let written = format!("{section}.{name}");
                let Some(s) = table::by_field(section, &name) else {
                    let names = SETTINGS
                        .iter()
                        .filter(|s| s.section == *section)
                        .map(|s| s.name);
                    let likely = nearest(&name, names).map(|n| format!("{section}.{n}"));
                    return Err(unknown(written, likely));
                };
                place(s, written, value)?;
            }
        } else if let Some(s) = table::by_key(&key.to_ascii_uppercase()) {
            place(s, key, value)?;
        } else {
            let likely = match value {
                Value::Dict(..) => nearest(&key, SECTIONS.iter().copied()),
                _ => likely_key(&key),
            };
            return Err(unknown(key, likely.map(str::to_string)));
        }
    }
    Ok(out)
}

/// A string, number or boolean, or an array of strings and integers (a list).
fn is_scalar_or_list(value: &Value) -> bool {
    let item = |v: &Value| match v {
        Value::String(..) => true,
        Value::Num(_, n) => !matches!(n, Num::F32(_) | Num::F64(_)),
        _ => false,
    };
    match value {
        Value::String(..) | Value::Char(..) | Value::Bool(..) | Value::Num(..) => true,
        Value::Array(_, items) => items.iter().all(item),
        Value::Dict(..) | Value::Empty(..) => false,
    }
}
