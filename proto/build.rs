//! Compiles `control.proto` (operator ↔ sidecar) and `cache.proto` (what
//! sidecars keep in a shared response cache) with protox (pure Rust: no
//! `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=control.proto");
    println!("cargo:rerun-if-changed=cache.proto");
    let fds = protox::compile(["control.proto", "cache.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
