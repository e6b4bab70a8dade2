//! The `mailroom` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    mailroom::cli::main()
}
