//! Command line of telemprobd (§4.1): the daemons' shared `getopt_long "f:hV"` parser
//! ([`daemon_common::cli`]) and telemprobd's usage text.

pub use daemon_common::cli::{parse, Command, Options, UsageError};

/// The usage text of the C daemon.
pub fn usage(argv0: &str) -> String {
    format!(
        "{argv0}: Usage\n  \
-f,  --config_file    Configuration file. This overides the other default configuration files\n  \
-h,  --help           Display this help message\n  \
-V,  --version        Print the program version\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_names_the_three_options() {
        let u = usage("telemprobd");
        assert!(u.starts_with("telemprobd: Usage\n"));
        for opt in ["--config_file", "--help", "--version"] {
            assert!(u.contains(opt), "{opt}");
        }
    }
}
