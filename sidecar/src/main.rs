//! `tokenwarden-sidecar`: see the library for everything.

fn main() -> std::process::ExitCode {
    tokenwarden_sidecar::main()
}
