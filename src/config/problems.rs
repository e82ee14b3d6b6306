//! The one list every section reports into, so that the exit-64 report names every
//! problem at once, each key's with where its value was set (a file line or a variable).

use std::collections::HashMap;
use std::fmt::Display;

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Where a section or a key was set.
#[derive(Debug, Clone)]
enum Origin {
    Line(usize),
    Env(String),
}

#[derive(Debug, Default)]
pub(super) struct Problems {
    list: Vec<String>,
    /// Not errors: a configuration that runs, but maybe not as meant.
    warnings: Vec<String>,
    /// By `section` or `section.key`.
    origins: HashMap<String, Origin>,
}

impl Problems {
    /// `section.key` (or `section` alone, for a whole section) is on `line` of the file.
    pub(super) fn set_line(&mut self, name: String, line: usize) {
        self.origins.insert(name, Origin::Line(line));
    }

    /// `section.key` was set by the environment variable `var` (which wins over the file).
    pub(super) fn set_env(&mut self, name: String, var: &str) {
        self.origins.insert(name, Origin::Env(var.to_string()));
    }

    /// A problem that names its own place.
    pub(super) fn push(&mut self, problem: impl Into<String>) {
        self.list.push(problem.into());
    }

    /// A problem with the key `section.key`, followed by where its value was set.
    pub(super) fn key(&mut self, name: &str, problem: impl Display) {
        let at = self.at(name);
        self.list.push(format!("{name}: {problem}{at}"));
    }

    /// A problem with a whole section.
    pub(super) fn section(&mut self, name: &str, problem: impl Display) {
        let at = self.at(name);
        self.list.push(format!("[{name}]: {problem}{at}"));
    }

    fn at(&self, name: &str) -> String {
        match self.origins.get(name) {
            Some(Origin::Line(n)) => format!(", at line {n}"),
            Some(Origin::Env(var)) => format!(", set by {var}"),
            None => String::new(),
        }
    }

    /// `name: must be at least 1` for each count that is 0.
    pub(super) fn at_least_one(&mut self, counts: &[(&str, u64)]) {
        for &(name, v) in counts {
            if v == 0 {
                self.key(name, "must be at least 1");
            }
        }
    }

    /// `name: must be greater than 0` for each duration that is zero.
    pub(super) fn nonzero(&mut self, durations: &[(&str, std::time::Duration)]) {
        for &(name, d) in durations {
            if d.is_zero() {
                self.key(name, "must be greater than 0");
            }
        }
    }

    /// A warning: the configuration is valid, `check-config` says it on stderr.
    pub(super) fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    pub(super) fn warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn into_error(self) -> ConfigError {
        ConfigError {
            problems: self.list,
        }
    }
}
