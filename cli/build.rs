//! Records where libtorch is (scripts/torch-env.sh exports
//! `PICSIFT_TORCH_LIB`) as the binary's run path, so `picsift` starts
//! without `LD_LIBRARY_PATH`, as a worker Job's bare environment does. An
//! image that ships libtorch elsewhere sets `LD_LIBRARY_PATH` instead.
fn main() {
    println!("cargo:rerun-if-env-changed=PICSIFT_TORCH_LIB");
    if let Ok(lib) = std::env::var("PICSIFT_TORCH_LIB")
        && !lib.is_empty()
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
    }
}
