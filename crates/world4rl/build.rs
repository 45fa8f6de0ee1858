//! Embeds libtorch's library directory (and, with the `mujoco` feature, libmujoco's) as rpaths, so the
//! binaries and tests of this package run without LD_LIBRARY_PATH.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    if std::env::var_os("CARGO_FEATURE_MUJOCO").is_some() {
        if let Some(dir) = std::env::var_os("MUJOCO_DYNAMIC_LINK_DIR") {
            println!(
                "cargo:rustc-link-arg=-Wl,-rpath,{}",
                std::path::Path::new(&dir).display()
            );
        }
    }
}
