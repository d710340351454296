//! `getopt_long` as glibc does it, for command-line tools that must keep the C tools'
//! behaviour: clustered short options (`-on`), attached or separate arguments (`-ca/b/c`,
//! `-c a/b/c`), `--name=value` / `--name value`, unambiguous prefixes of long names
//! (`--sev 2`), argument permutation (options after operands), `--` ending the options, and
//! glibc's diagnostics (`prog: invalid option -- 'x'`, ...), which the caller prints.
//!
//! Hand-written on purpose: these messages and rules are a compatibility contract with the
//! C tools' command lines (scripts and units call them), and no argument-parsing crate
//! reproduces glibc's. Every program that keeps a C command line uses this one (hprobe,
//! telem-record-gen, telemprobd and telempostd through `daemon_common::cli`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// A long option: `--name`, reported as `short` (the C `val`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongOpt {
    pub name: &'static str,
    pub takes_arg: bool,
    pub short: char,
}

impl LongOpt {
    pub const fn flag(name: &'static str, short: char) -> LongOpt {
        LongOpt {
            name,
            takes_arg: false,
            short,
        }
    }

    pub const fn with_arg(name: &'static str, short: char) -> LongOpt {
        LongOpt {
            name,
            takes_arg: true,
            short,
        }
    }
}

/// One parsed option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub short: char,
    pub arg: Option<OsString>,
}

/// What getopt reports as `'?'`. `Display` gives glibc's message without the program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptError {
    InvalidShort(char),
    ShortNeedsArg(char),
    UnrecognizedLong(String),
    LongNeedsArg(String),
    LongTakesNoArg(String),
    Ambiguous {
        given: String,
        candidates: Vec<&'static str>,
    },
}

impl fmt::Display for OptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptError::InvalidShort(c) => write!(f, "invalid option -- '{c}'"),
            OptError::ShortNeedsArg(c) => write!(f, "option requires an argument -- '{c}'"),
            OptError::UnrecognizedLong(s) => write!(f, "unrecognized option '--{s}'"),
            OptError::LongNeedsArg(s) => write!(f, "option '--{s}' requires an argument"),
            OptError::LongTakesNoArg(s) => write!(f, "option '--{s}' doesn't allow an argument"),
            OptError::Ambiguous { given, candidates } => {
                write!(f, "option '--{given}' is ambiguous; possibilities:")?;
                for c in candidates {
                    write!(f, " '--{c}'")?;
                }
                Ok(())
            }
        }
    }
}

/// Iterator over the options of `args` (without the program name). Operands are collected
/// in [`Getopt::operands`].
pub struct Getopt<'a> {
    args: Vec<OsString>,
    /// The C `optstring`: option characters, each followed by `:` if it takes an argument.
    shorts: &'a str,
    longs: &'a [LongOpt],
    next: usize,
    /// Position inside a cluster of short options (`-abc`), 0 when not in one.
    cluster: usize,
    operands: Vec<OsString>,
}

impl<'a> Getopt<'a> {
    pub fn new(args: Vec<OsString>, shorts: &'a str, longs: &'a [LongOpt]) -> Getopt<'a> {
        Getopt {
            args,
            shorts,
            longs,
            next: 0,
            cluster: 0,
            operands: Vec::new(),
        }
    }

    /// Operands seen so far (all of them once the iterator is exhausted).
    pub fn operands(&self) -> &[OsString] {
        &self.operands
    }

    fn short_spec(&self, c: char) -> Option<bool> {
        if c == ':' {
            return None;
        }
        let i = self.shorts.find(c)?;
        Some(self.shorts[i + c.len_utf8()..].starts_with(':'))
    }

    fn take_next_arg(&mut self) -> Option<OsString> {
        let a = self.args.get(self.next).cloned();
        if a.is_some() {
            self.next += 1;
        }
        a
    }

    fn short(&mut self) -> Result<Opt, OptError> {
        let arg = self.args[self.next].as_bytes().to_vec();
        let rest = String::from_utf8_lossy(&arg[self.cluster..]).into_owned();
        let c = rest.chars().next().unwrap_or('?');
        self.cluster += c.len_utf8().min(arg.len() - self.cluster).max(1);
        let at_end = self.cluster >= arg.len();
        if at_end {
            self.next += 1;
            self.cluster = 0;
        }
        match self.short_spec(c) {
            None => Err(OptError::InvalidShort(c)),
            Some(false) => Ok(Opt {
                short: c,
                arg: None,
            }),
            Some(true) if !at_end => {
                let value = OsString::from_vec(arg[self.cluster..].to_vec());
                self.next += 1;
                self.cluster = 0;
                Ok(Opt {
                    short: c,
                    arg: Some(value),
                })
            }
            Some(true) => match self.take_next_arg() {
                Some(v) => Ok(Opt {
                    short: c,
                    arg: Some(v),
                }),
                None => Err(OptError::ShortNeedsArg(c)),
            },
        }
    }

    fn long(&mut self, body: &[u8]) -> Result<Opt, OptError> {
        self.next += 1;
        let (name_bytes, value) = match body.iter().position(|&b| b == b'=') {
            Some(i) => (&body[..i], Some(OsString::from_vec(body[i + 1..].to_vec()))),
            None => (body, None),
        };
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let opt = match self.longs.iter().find(|l| l.name == name) {
            Some(exact) => *exact,
            None => {
                let matches: Vec<&LongOpt> = self
                    .longs
                    .iter()
                    .filter(|l| l.name.starts_with(&name))
                    .collect();
                let Some(first) = matches.first() else {
                    return Err(OptError::UnrecognizedLong(
                        String::from_utf8_lossy(body).into_owned(),
                    ));
                };
                // glibc: prefixes of several names are fine if they all mean the same.
                if matches
                    .iter()
                    .any(|m| m.takes_arg != first.takes_arg || m.short != first.short)
                {
                    return Err(OptError::Ambiguous {
                        given: name,
                        candidates: matches.iter().map(|m| m.name).collect(),
                    });
                }
                **first
            }
        };
        match (opt.takes_arg, value) {
            (false, Some(_)) => Err(OptError::LongTakesNoArg(opt.name.to_string())),
            (false, None) => Ok(Opt {
                short: opt.short,
                arg: None,
            }),
            (true, Some(v)) => Ok(Opt {
                short: opt.short,
                arg: Some(v),
            }),
            (true, None) => match self.take_next_arg() {
                Some(v) => Ok(Opt {
                    short: opt.short,
                    arg: Some(v),
                }),
                None => Err(OptError::LongNeedsArg(opt.name.to_string())),
            },
        }
    }
}

impl Iterator for Getopt<'_> {
    type Item = Result<Opt, OptError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cluster > 0 {
            return Some(self.short());
        }
        loop {
            let arg = self.args.get(self.next)?.clone();
            let bytes = arg.as_bytes();
            if bytes == b"--" {
                self.next += 1;
                self.operands.extend(self.args.drain(self.next..));
                return None;
            }
            if let Some(body) = bytes.strip_prefix(b"--") {
                return Some(self.long(body));
            }
            if bytes.len() > 1 && bytes[0] == b'-' {
                self.cluster = 1;
                return Some(self.short());
            }
            // GNU permutation: operands may come before options.
            self.operands.push(arg);
            self.next += 1;
        }
    }
}

/// `args` as `OsString`s, for [`Getopt::new`].
pub fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONGS: &[LongOpt] = &[
        LongOpt::flag("echo", 'o'),
        LongOpt::with_arg("payload", 'p'),
        LongOpt::with_arg("payload-file", 'P'),
        LongOpt::with_arg("config-file", 'f'),
        LongOpt::with_arg("config_file", 'f'),
    ];
    const SHORTS: &str = "hc:op:P:f:";

    fn parse(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut g = Getopt::new(os_args(args), SHORTS, LONGS);
        let mut out = Vec::new();
        for r in g.by_ref() {
            out.push(match r {
                Ok(Opt { short, arg: None }) => format!("{short}"),
                Ok(Opt {
                    short,
                    arg: Some(a),
                }) => format!("{short}={}", a.to_string_lossy()),
                Err(e) => format!("!{e}"),
            });
        }
        let ops = g
            .operands()
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect();
        (out, ops)
    }

    fn check(args: &[&str], expected: &[&str], operands: &[&str]) {
        let (got, ops) = parse(args);
        assert_eq!(got, expected, "{args:?}");
        assert_eq!(ops, operands, "{args:?}");
    }

    #[test]
    fn getopt_long_cases() {
        check(
            &["-on", "-ca/b/c"],
            &["o", "!invalid option -- 'n'", "c=a/b/c"],
            &[],
        );
        check(&["-c", "-x"], &["c=-x"], &[]);
        check(&["-oca/b", "x"], &["o", "c=a/b"], &["x"]);
        check(&["x", "-o", "--", "-h"], &["o"], &["x", "-h"]);
        check(
            &["-", "-c"],
            &["!option requires an argument -- 'c'"],
            &["-"],
        );
        check(&["--echo", "--payload=hi"], &["o", "p=hi"], &[]);
        check(&["--payload", "-x"], &["p=-x"], &[]);
        check(&["--payload-f", "f"], &["P=f"], &[]);
        check(&["--config", "/c"], &["f=/c"], &[]);
        check(&["--config_file=/c"], &["f=/c"], &[]);
        check(
            &["--pay", "x"],
            &["!option '--pay' is ambiguous; possibilities: '--payload' '--payload-file'"],
            &["x"],
        );
        check(&["--nope=1"], &["!unrecognized option '--nope=1'"], &[]);
        check(
            &["--echo=1"],
            &["!option '--echo' doesn't allow an argument"],
            &[],
        );
        check(
            &["--payload"],
            &["!option '--payload' requires an argument"],
            &[],
        );
        check(&["-:"], &["!invalid option -- ':'"], &[]);
    }
}
