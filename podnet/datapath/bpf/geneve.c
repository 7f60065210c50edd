// SPDX-License-Identifier: GPL-2.0
/* podnet's Geneve (RFC 8926) in tc-BPF, for kernels without a geneve driver.
 *
 * Built twice from this file (podnet.datapath.bpf.build):
 *   -DPODNET_ENCAP: on the egress of podnet_geneve. The frame the kernel routed there (inner
 *     Ethernet header: destination = the peer's VTEP MAC from the permanent neighbour entry) gets
 *     an outer IPv4/UDP/Geneve header; the peer's underlay address comes from gnv_peers (keyed by
 *     that MAC, what a kernel tunnel device keeps in its FDB); bpf_redirect_neigh sends it out of the underlay
 *     device, which resolves the outer next hop.
 *   -DPODNET_DECAP: on the ingress of the underlay device. A Geneve packet to our port, with
 *     our VNI and protocol 0x6558, from an underlay address in gnv_allowed, loses its outer
 *     IPv4/UDP/Geneve/inner-Ethernet headers and goes on as the inner IP packet; a Geneve packet
 *     from anyone else is dropped (counted). Anything else passes untouched.
 * gnv_config (one entry) holds the node's underlay address, the UDP port, the VNI and the
 * underlay device; gnv_stats counts what each program did. The agent fills the maps by map id.
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

#define GENEVE_LEN TUN_HDR_LEN
#define OUTER_LEN TUN_OUTER_LEN
#define ENCAP_LEN TUN_ENCAP_LEN

struct gnv_config {
	__be32 local;        /* the node's underlay IPv4 address: the outer source */
	__u32 vni;           /* 24 bits */
	__u32 underlay_ifindex;
	__u16 port;          /* host order */
	__u16 pad;
};

struct mac_key {
	__u8 mac[ETH_ALEN];
	__u8 pad[2];
};

struct gnv_peer {
	__be32 remote; /* the peer's underlay IPv4 address */
};

enum gnv_stat {
	STAT_ENCAP = 0,
	STAT_NO_PEER,
	STAT_DECAP,
	STAT_DENIED,
	STAT_ERROR,
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gnv_config);
} gnv_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} gnv_stats SEC(".maps");

#ifdef PODNET_ENCAP
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mac_key);
	__type(value, struct gnv_peer);
} gnv_peers SEC(".maps");
#endif

#ifdef PODNET_DECAP
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, __u32);
} gnv_allowed SEC(".maps");
#endif

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&gnv_stats, &what);

	if (n)
		*n += 1;
}

#ifdef PODNET_ENCAP
SEC("tc")
int geneve_encap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct gnv_config *cfg = bpf_map_lookup_elem(&gnv_config, &zero);
	struct ethhdr inner_eth;
	struct mac_key key = {};
	struct gnv_peer *peer;

	if (!cfg)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, &inner_eth, sizeof(inner_eth)) < 0) {
		count(STAT_ERROR);
		return TC_ACT_SHOT;
	}
	if (inner_eth.h_dest[0] & 1) /* multicast (the device's own IPv6 RS, MLD): no peer is meant */
		return TC_ACT_SHOT;
	__builtin_memcpy(key.mac, inner_eth.h_dest, ETH_ALEN);
	peer = bpf_map_lookup_elem(&gnv_peers, &key);
	if (!peer) {
		count(STAT_NO_PEER);
		return TC_ACT_SHOT;
	}
	if (tun_encap(skb, &inner_eth, cfg->local, peer->remote, cfg->vni, cfg->port, WIRE_GENEVE) < 0) {
		count(STAT_ERROR);
		return TC_ACT_SHOT;
	}
	count(STAT_ENCAP);
	return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
}
#endif

#ifdef PODNET_DECAP
SEC("tc")
int geneve_decap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct gnv_config *cfg = bpf_map_lookup_elem(&gnv_config, &zero);
	struct {
		struct iphdr ip;
		struct udphdr udp;
		__u8 geneve[GENEVE_LEN];
	} __attribute__((packed)) h;
	struct ethhdr inner_eth;

	if (!cfg || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &h, sizeof(h)) < 0)
		return TC_ACT_UNSPEC;
	if (h.ip.ihl != 5 || h.ip.protocol != IPPROTO_UDP || h.udp.dest != bpf_htons(cfg->port))
		return TC_ACT_UNSPEC;
	if (h.ip.frag_off & bpf_htons(0x3fff)) /* a fragment: leave it to the kernel */
		return TC_ACT_UNSPEC;
	__u32 vni = ((__u32)h.geneve[4] << 16) | ((__u32)h.geneve[5] << 8) | h.geneve[6];

	if ((h.geneve[0] >> 6) != 0 || h.geneve[2] != (ETH_P_TEB >> 8) ||
	    h.geneve[3] != (ETH_P_TEB & 0xff) || vni != cfg->vni)
		return TC_ACT_UNSPEC; /* not our Geneve: the kernel answers it (port unreachable) */
	if (!bpf_map_lookup_elem(&gnv_allowed, &h.ip.saddr)) {
		count(STAT_DENIED);
		return TC_ACT_SHOT;
	}
	__u32 options = (h.geneve[0] & 0x3f) * 4;
	__u32 strip = ENCAP_LEN + options;

	if (bpf_skb_load_bytes(skb, ETH_HLEN + OUTER_LEN + options, &inner_eth, sizeof(inner_eth)) < 0) {
		count(STAT_ERROR);
		return TC_ACT_SHOT;
	}
	if (tun_strip(skb, strip, inner_eth.h_proto) < 0) {
		count(STAT_ERROR);
		return TC_ACT_SHOT;
	}
	count(STAT_DECAP);
	return TC_ACT_UNSPEC;
}
#endif

char _license[] SEC("license") = "GPL";
