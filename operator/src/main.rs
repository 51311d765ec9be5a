//! `tokenwarden-operator`: see the library for everything.

fn main() -> std::process::ExitCode {
    tokenwarden_operator::main()
}
