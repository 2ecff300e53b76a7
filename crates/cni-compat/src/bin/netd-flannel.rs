//! netd-flannel: flannel's CNI meta plugin on netd's cluster networks, as a plugin binary.

fn main() {
    std::process::exit(cni_compat::spec::run_plugin(
        &cni_compat::flannel::Flannel::<cni_compat::host::PathDelegate>::default(),
    ));
}
