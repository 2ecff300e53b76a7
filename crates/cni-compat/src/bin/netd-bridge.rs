//! netd-bridge: the reference `bridge` CNI plugin's behaviour, as a plugin binary.

fn main() {
    std::process::exit(cni_compat::spec::run_plugin(
        &cni_compat::bridge::Bridge::default(),
    ));
}
