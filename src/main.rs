//! The `wasmcache` binary: everything it does is [`wasmcache::cli::main`].

fn main() -> std::process::ExitCode {
    wasmcache::cli::main()
}
