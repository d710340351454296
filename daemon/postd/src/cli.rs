//! Command line of telempostd (§5.1): the daemons' shared `getopt_long "f:hV"` parser
//! ([`daemon_common::cli`]) and telempostd's usage text (the C daemon printed the same lines as
//! telemprobd).

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
    fn usage_is_the_c_text() {
        assert_eq!(
            usage("telempostd"),
            "telempostd: Usage\n  \
-f,  --config_file    Configuration file. This overides the other default configuration files\n  \
-h,  --help           Display this help message\n  \
-V,  --version        Print the program version\n"
        );
    }
}
