//! netd-portmap: the reference `portmap` CNI plugin's behaviour, as a plugin binary.

fn main() {
    std::process::exit(cni_compat::spec::run_plugin(
        &cni_compat::portmap::Portmap::default(),
    ));
}
