//! netd-ipam: host-local compatible IPAM, as a CNI plugin binary.

fn main() {
    std::process::exit(cni_compat::spec::run_plugin(&cni_compat::ipam::HostLocal));
}
