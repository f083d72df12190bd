//! Write-side modes per process selection: `--write-mode MODE` for every selected process,
//! `--write-mode-for SELECTOR=MODE` to override it for some of them.

use std::{fmt, str::FromStr};

use tracer_common::{WRITE_INJECT, WRITE_OFF, WRITE_READ_ONLY, WRITE_REWRITE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum WriteMode {
    /// Never touch requests, and choose no ids in the kernel.
    Off,
    /// Read and report, never edit (the default).
    ReadOnly,
    /// Replace the span id of the B3/W3C context an app forwards with its CLIENT span's id.
    Rewrite,
    /// Rewrite, and add context headers to requests that carry none when the causing request
    /// is known (same thread).
    Inject,
}

impl WriteMode {
    /// The kernel's `WRITE_*` value.
    #[must_use]
    pub fn kernel(self) -> u32 {
        match self {
            Self::Off => WRITE_OFF,
            Self::ReadOnly => WRITE_READ_ONLY,
            Self::Rewrite => WRITE_REWRITE,
            Self::Inject => WRITE_INJECT,
        }
    }

    #[must_use]
    pub fn edits(self) -> bool {
        self >= Self::Rewrite
    }
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::ReadOnly => "read-only",
            Self::Rewrite => "rewrite",
            Self::Inject => "inject",
        })
    }
}

impl FromStr for WriteMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            "read-only" | "readonly" => Ok(Self::ReadOnly),
            "rewrite" => Ok(Self::Rewrite),
            "inject" => Ok(Self::Inject),
            other => Err(format!(
                "unknown write mode `{other}` (expected off, read-only, rewrite or inject)"
            )),
        }
    }
}

/// Which processes a `--write-mode-for` rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Executable or command name, as `--exe`.
    Exe(String),
    Pid(u32),
    /// Processes listening on this TCP port, as `--port`.
    Port(u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub target: Target,
    pub mode: WriteMode,
}

impl FromStr for Rule {
    type Err = String;

    /// `exe:NAME=MODE`, `pid:PID=MODE` or `port:PORT=MODE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected exe:NAME=MODE, pid:PID=MODE or port:PORT=MODE";
        let (target, mode) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("`{s}`: {usage}"))?;
        let mode: WriteMode = mode.parse()?;
        let (kind, value) = target
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: {usage}"))?;
        let value = value.trim();
        let bad = || format!("`{s}`: `{value}` is not a valid {kind}");
        let target = match kind.trim() {
            "exe" if !value.is_empty() => Target::Exe(value.to_owned()),
            "pid" => Target::Pid(value.parse().map_err(|_| bad())?),
            "port" => Target::Port(value.parse().map_err(|_| bad())?),
            _ => return Err(format!("`{s}`: {usage}")),
        };
        Ok(Self { target, mode })
    }
}

/// The write mode of every selected process: the first matching rule, else the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteModes {
    pub default: WriteMode,
    pub rules: Vec<Rule>,
}

impl Default for WriteModes {
    fn default() -> Self {
        Self {
            default: WriteMode::ReadOnly,
            rules: Vec::new(),
        }
    }
}

impl WriteModes {
    /// Whether any process can end up editing requests (the write-side programs are needed).
    #[must_use]
    pub fn any_edits(&self) -> bool {
        self.default.edits() || self.rules.iter().any(|r| r.mode.edits())
    }

    /// Ports the rules name (the selection looks their listeners up).
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.rules
            .iter()
            .filter_map(|r| match r.target {
                Target::Port(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// The mode of a selected process; `matches` tells whether a target names it.
    pub fn mode_of(&self, mut matches: impl FnMut(&Target) -> bool) -> WriteMode {
        self.rules
            .iter()
            .find(|r| matches(&r.target))
            .map_or(self.default, |r| r.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_rules() {
        assert_eq!("read-only".parse::<WriteMode>(), Ok(WriteMode::ReadOnly));
        assert!("sometimes".parse::<WriteMode>().is_err());
        assert_eq!(
            "exe:python3=inject".parse::<Rule>(),
            Ok(Rule {
                target: Target::Exe("python3".into()),
                mode: WriteMode::Inject
            })
        );
        assert_eq!(
            "pid:42=off".parse::<Rule>().unwrap().target,
            Target::Pid(42)
        );
        assert_eq!(
            "port:8080=rewrite".parse::<Rule>().unwrap().target,
            Target::Port(8080)
        );
        for bad in [
            "python3=inject",
            "exe:=inject",
            "pid:x=off",
            "port:1=maybe",
            "uid:0=off",
            "exe:a",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn first_matching_rule_wins_else_default() {
        let modes = WriteModes {
            default: WriteMode::Rewrite,
            rules: vec![
                "pid:7=off".parse().unwrap(),
                "exe:py=inject".parse().unwrap(),
            ],
        };
        assert!(modes.any_edits());
        assert_eq!(modes.mode_of(|t| *t == Target::Pid(7)), WriteMode::Off);
        assert_eq!(
            modes.mode_of(|t| *t == Target::Exe("py".into())),
            WriteMode::Inject
        );
        assert_eq!(modes.mode_of(|_| false), WriteMode::Rewrite);
        assert!(!WriteModes::default().any_edits());
    }
}
