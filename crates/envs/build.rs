//! With the `mujoco` feature, embeds the directory of libmujoco (`MUJOCO_DYNAMIC_LINK_DIR`, which mujoco-rs
//! links from) as an rpath of this package's test and example binaries, so they run without
//! `LD_LIBRARY_PATH`. (Binaries of other packages need the same link argument in their own build script.)

fn main() {
    println!("cargo:rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    if std::env::var_os("CARGO_FEATURE_MUJOCO").is_none() {
        return;
    }
    if let Some(dir) = std::env::var_os("MUJOCO_DYNAMIC_LINK_DIR") {
        let dir = std::path::PathBuf::from(dir);
        let dir = dir.canonicalize().unwrap_or(dir);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
