// SPDX-License-Identifier: GPL-2.0
/* podnet's VXLAN decapsulation in tc-BPF, beside the kernel's VXLAN device, with BPF host
 * routing (bpf.hostLegacyRouting=false) over an IPv4 underlay. On the ingress of the underlay
 * device: a VXLAN packet (RFC 7348: the I flag set, our VNI) to our UDP port, not a fragment,
 * from an underlay address in vx_allowed (the peers, what the nft guard's tunnel rule allows),
 * loses its outer IPv4/UDP/VXLAN/inner-Ethernet headers and goes on as the inner packet, as if
 * it had arrived that way: the VXLAN device's receive path (UDP socket, GRO cells, a second
 * pass through the stack) is skipped. A VXLAN packet from anyone else is dropped and counted;
 * anything else passes untouched, and the kernel's VXLAN device still takes whatever this
 * program leaves (it is the path while the program is not attached). Every verdict but a drop is
 * TC_ACT_UNSPEC: the next filter, BPF host routing's program on the same hook, then takes the
 * inner packet and delivers it straight into a pod of this node. vx_config holds the port
 * and the VNI; the agent fills the maps by map id.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "encap.h"

struct vx_config {
	__u32 vni;
	__u16 port; /* host order */
	__u16 pad;
};

enum vx_stat {
	STAT_DECAP = 0,
	STAT_DENIED,
	STAT_ERROR,
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vx_config);
} vx_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, __u32);
} vx_allowed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} vx_stats SEC(".maps");

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&vx_stats, &what);

	if (n)
		*n += 1;
	return verdict;
}

SEC("tc")
int vxlan_decap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct vx_config *cfg = bpf_map_lookup_elem(&vx_config, &zero);
	struct {
		struct iphdr ip;
		struct udphdr udp;
		__u8 vxlan[TUN_HDR_LEN];
		struct ethhdr inner;
	} __attribute__((packed)) h;

	if (!cfg || !cfg->port || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &h, sizeof(h)) < 0)
		return TC_ACT_UNSPEC;
	if (h.ip.ihl != 5 || h.ip.protocol != IPPROTO_UDP || h.udp.dest != bpf_htons(cfg->port))
		return TC_ACT_UNSPEC;
	if (h.ip.frag_off & bpf_htons(0x3fff)) /* a fragment: leave it to the kernel */
		return TC_ACT_UNSPEC;
	__u32 vni = ((__u32)h.vxlan[4] << 16) | ((__u32)h.vxlan[5] << 8) | h.vxlan[6];

	if (h.vxlan[0] != 0x08 || vni != cfg->vni)
		return TC_ACT_UNSPEC; /* flags or a VNI the kernel's device may know: it decides */
	if (!bpf_map_lookup_elem(&vx_allowed, &h.ip.saddr))
		return count(STAT_DENIED, TC_ACT_SHOT);
	int err = tun_strip(skb, TUN_ENCAP_LEN, h.inner.h_proto);

	if (err == -1)
		return TC_ACT_UNSPEC; /* ARP or another protocol inside: the device takes it */
	if (err < 0)
		return count(STAT_ERROR, TC_ACT_SHOT);
	return count(STAT_DECAP, TC_ACT_UNSPEC);
}

char _license[] SEC("license") = "GPL";
