// SPDX-License-Identifier: GPL-2.0
/* podnet's BPF host routing (bpf.hostLegacyRouting=false), on the ingress of every pod's
 * node-side veth: an IPv4 or IPv6 packet from a pod, with the pod's own source address, to a pod
 * address of the cluster skips the node's IP stack:
 *   - to a pod on this node: bpf_redirect_peer straight into that pod's namespace;
 *   - to a pod elsewhere: bpf_fib_lookup in the node's tables (the route MTU is checked there);
 *     natively out of the device the kernel would use, with bpf_redirect, or bpf_redirect_neigh
 *     when the next hop's neighbour is not resolved yet;
 *   - when that device is the tunnel device (hr_tunnel names it): straight into the
 *     encapsulation. The next hop's MAC is the peer's VTEP MAC; hr_peers maps it to the peer's
 *     underlay address (the tunnel protocol's peer entries), the program writes the outer
 *     IPv4/UDP header and the protocol's own (encap.h, by hr_tunnel's wire format) and sends the packet out of the
 *     underlay device after a second lookup for the outer addresses: the tunnel device's own
 *     transmit path is skipped. A peer missing from hr_peers, or no hr_tunnel config (an IPv6
 *     underlay), leaves it to the tunnel device.
 * IPv6 takes the same steps with its own maps (hr_endpoints6, hr_cluster6): the hop limit instead
 * of the TTL, the peer's IPv6 router address as next hop, and the encapsulation over the IPv4
 * underlay the same way.
 * The same program is on the ingress of the node's underlay device(s) (hr_underlay): a packet
 * from a cluster pod address elsewhere to a pod of this node (not one a NetworkPolicy isolates)
 * goes straight into that pod with bpf_redirect_peer, past the node's IP stack, as Cilium's
 * bpf_host does; whatever it leaves (TC_ACT_UNSPEC) goes on to the next filter (a tunnel
 * protocol's decap) and the kernel.
 * Anything else (another source address, a destination outside the cluster, a packet the route
 * MTU does not fit, a pod whose MAC is not learnt yet) goes the kernel's way, where the
 * pod guard, masquerading and ICMP errors live. hr_endpoints (pod address -> its veth's ifindex
 * and MAC, and the pod's own MAC, learnt here from its packets) and hr_cluster (the cluster's
 * pod CIDRs), hr_tunnel (the encapsulation: outer source, port, VNI, wire format, the tunnel
 * device) and hr_peers are filled by the agent by map id.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "encap.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

struct hr_endpoint {
	__u32 ifindex;          /* the pod's node-side veth */
	__u8 host_mac[ETH_ALEN]; /* that veth's MAC: the source of frames delivered to the pod */
	__u8 pod_mac[ETH_ALEN];  /* the pod's eth0, learnt from its own packets (zero: not yet) */
};

struct hr_cidr {
	__u32 prefixlen;
	__be32 addr;
};

struct hr_cidr6 {
	__u32 prefixlen;
	__u32 addr[4];
};

struct hr_addr6 {
	__u32 addr[4];
};

enum hr_stat {
	STAT_PEER = 0, /* same node: redirect_peer */
	STAT_FIB,      /* other node: redirect after fib lookup */
	STAT_NEIGH,    /* other node: redirect_neigh */
	STAT_KERNEL,   /* handed to the kernel's path */
	STAT_ENCAP,    /* other node: encapsulated here, out of the underlay */
	STAT_ERROR,    /* dropped: the packet was half-encapsulated when a helper failed */
	STAT_DELIVER,  /* from the underlay: redirect_peer into a pod of this node */
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, struct hr_endpoint);
} hr_endpoints SEC(".maps");

/* hr_cluster's values: a pod CIDR redirected to, or the address of a pod a NetworkPolicy
 * isolates, whose packets (either way) take the kernel's path through netfilter */
#define HR_CLUSTER 1
#define HR_KERNEL 2

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hr_cidr);
	__type(value, __u32);
} hr_cluster SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct hr_addr6);
	__type(value, struct hr_endpoint);
} hr_endpoints6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hr_cidr6);
	__type(value, __u32);
} hr_cluster6 SEC(".maps");

struct hr_tunnel {
	__be32 local;          /* the node's underlay IPv4 address: the outer source */
	__u32 vni;
	__u32 tunnel_ifindex;  /* the tunnel device the kernel's routes use; 0: no encapsulation here */
	__u16 port;            /* host order */
	__u8 wire;             /* enum tun_wire */
	__u8 pad;
};

struct mac_key {
	__u8 mac[ETH_ALEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hr_tunnel);
} hr_tunnel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mac_key);
	__type(value, __be32); /* the peer's underlay IPv4 address */
} hr_peers SEC(".maps");

/* the node's underlay devices (ifindex -> 1): packets arriving there may be delivered to pods */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} hr_underlay SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hr_stats SEC(".maps");

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&hr_stats, &what);

	if (n)
		*n += 1;
	return verdict;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	int same = 1;
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		same &= a[i] == b[i];
	return same;
}

static __always_inline int mac_zero(const __u8 *a)
{
	return (a[0] | a[1] | a[2] | a[3] | a[4] | a[5]) == 0;
}

#define IP_OFF ETH_HLEN
#define TTL_OFF (IP_OFF + offsetof(struct iphdr, ttl))
#define CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))

/* what the kernel's forwarding does to the header: TTL - 1, checksum updated */
static __always_inline int dec_ttl(struct __sk_buff *skb, __u8 ttl)
{
	__u8 new_ttl = ttl - 1;
	/* the TTL is the high byte of the 16-bit word it shares with the protocol */
	if (bpf_l3_csum_replace(skb, CSUM_OFF, bpf_htons((__u16)ttl << 8), bpf_htons((__u16)new_ttl << 8), 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, TTL_OFF, &new_ttl, sizeof(new_ttl), 0);
}

/* the frame (already addressed inner_eth) wrapped for the peer behind peer_mac; TC_ACT_OK with
 * *done = 0 when this is not for the encapsulation here (the tunnel device takes it) */
static __always_inline int encapsulate(struct __sk_buff *skb, struct bpf_fib_lookup *fib, __be16 inner_proto,
				       int *done)
{
	__u32 zero = 0;
	struct hr_tunnel *tun = bpf_map_lookup_elem(&hr_tunnel, &zero);
	struct mac_key key = {};

	*done = 0;
	if (!tun || !tun->tunnel_ifindex || fib->ifindex != tun->tunnel_ifindex)
		return TC_ACT_OK;
	__builtin_memcpy(key.mac, fib->dmac, ETH_ALEN);
	__be32 *remote = bpf_map_lookup_elem(&hr_peers, &key);

	if (!remote)
		return TC_ACT_OK;
	struct ethhdr inner = {.h_proto = inner_proto};

	__builtin_memcpy(inner.h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(inner.h_source, fib->smac, ETH_ALEN);
	struct bpf_fib_lookup outer = {
		.family = AF_INET,
		.ipv4_src = tun->local,
		.ipv4_dst = *remote,
		.ifindex = skb->ingress_ifindex,
	};
	long rc = bpf_fib_lookup(skb, &outer, sizeof(outer), 0);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK; /* the peer's underlay address is unreachable: the kernel says so */
	*done = 1;
	int err = tun_encap(skb, &inner, tun->local, *remote, tun->vni, tun->port, tun->wire);

	if (err == -1) {
		*done = 0; /* untouched: the tunnel device can still take it */
		return TC_ACT_OK;
	}
	if (err < 0)
		return count(STAT_ERROR, TC_ACT_SHOT);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET, .ipv4_nh = outer.ipv4_dst};

		return count(STAT_ENCAP, bpf_redirect_neigh(outer.ifindex, &nh, sizeof(nh), 0));
	}
	if (bpf_skb_store_bytes(skb, 0, outer.dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, outer.smac, ETH_ALEN, 0) < 0)
		return count(STAT_ERROR, TC_ACT_SHOT);
	return count(STAT_ENCAP, bpf_redirect(outer.ifindex, 0));
}

/* a packet for another node, its TTL or hop limit already lowered, after a fib lookup that found
 * the way (rc SUCCESS) or all but the next hop's neighbour (NO_NEIGH): into the encapsulation,
 * or out of the device the kernel would use */
static __always_inline int forward(struct __sk_buff *skb, struct bpf_fib_lookup *fib, long rc, __be16 proto)
{
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = {};

		if (proto == bpf_htons(ETH_P_IP)) {
			nh.nh_family = AF_INET;
			nh.ipv4_nh = fib->ipv4_dst;
		} else {
			nh.nh_family = AF_INET6;
			__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, sizeof(nh.ipv6_nh));
		}
		return count(STAT_NEIGH, bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0));
	}
	int done;
	int verdict = encapsulate(skb, fib, proto, &done);

	if (done)
		return verdict;
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
		return count(STAT_KERNEL, TC_ACT_OK);
	return count(STAT_FIB, bpf_redirect(fib->ifindex, 0));
}

/* From the underlay: a cluster pod's packet to an unpoliced pod of this node whose MAC is learnt
 * goes into it; anything else is left to the next filter and the kernel (TC_ACT_UNSPEC). */
static __always_inline int deliver4(struct __sk_buff *skb, struct iphdr *ip)
{
	struct hr_cidr src_key = {.prefixlen = 32, .addr = ip->saddr};
	struct hr_cidr dst_key = {.prefixlen = 32, .addr = ip->daddr};
	__u32 *from = bpf_map_lookup_elem(&hr_cluster, &src_key);
	__u32 *to = bpf_map_lookup_elem(&hr_cluster, &dst_key);

	if (!from || !to || *to == HR_KERNEL || ip->ttl <= 1 || ip->ihl != 5)
		return TC_ACT_UNSPEC;
	struct hr_endpoint *dst = bpf_map_lookup_elem(&hr_endpoints, &ip->daddr);

	if (!dst || mac_zero(dst->pod_mac))
		return TC_ACT_UNSPEC;
	if (dec_ttl(skb, ip->ttl) < 0 ||
	    bpf_skb_store_bytes(skb, 0, dst->pod_mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, dst->host_mac, ETH_ALEN, 0) < 0)
		return count(STAT_ERROR, TC_ACT_SHOT); /* half-rewritten: not for the kernel either */
	return count(STAT_DELIVER, bpf_redirect_peer(dst->ifindex, 0));
}

static __always_inline int from_underlay(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex;

	return bpf_map_lookup_elem(&hr_underlay, &ifindex) != NULL;
}

static __always_inline int route4(struct __sk_buff *skb)
{
	struct ethhdr eth;
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 || bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)) < 0)
		return TC_ACT_OK;
	if (from_underlay(skb))
		return deliver4(skb, &ip);
	struct hr_endpoint *src = bpf_map_lookup_elem(&hr_endpoints, &ip.saddr);

	if (!src || src->ifindex != skb->ingress_ifindex)
		return count(STAT_KERNEL, TC_ACT_OK); /* not this pod's address: the guard decides */
	if (!mac_eq(src->pod_mac, eth.h_source))
		__builtin_memcpy(src->pod_mac, eth.h_source, ETH_ALEN);
	struct hr_cidr key = {.prefixlen = 32, .addr = ip.daddr};

	__u32 *where = bpf_map_lookup_elem(&hr_cluster, &key);

	if (!where || *where == HR_KERNEL || ip.ttl <= 1 || ip.ihl != 5)
		return count(STAT_KERNEL, TC_ACT_OK); /* HR_KERNEL: a policed pod, netfilter decides */
	struct hr_endpoint *dst = bpf_map_lookup_elem(&hr_endpoints, &ip.daddr);

	if (dst) {
		if (mac_zero(dst->pod_mac))
			return count(STAT_KERNEL, TC_ACT_OK); /* its MAC is learnt from its first packet */
		if (dec_ttl(skb, ip.ttl) < 0 ||
		    bpf_skb_store_bytes(skb, 0, dst->pod_mac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, dst->host_mac, ETH_ALEN, 0) < 0)
			return count(STAT_KERNEL, TC_ACT_OK);
		return count(STAT_PEER, bpf_redirect_peer(dst->ifindex, 0));
	}
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.ipv4_src = ip.saddr,
		.ipv4_dst = ip.daddr,
		.ifindex = skb->ingress_ifindex,
		/* a GSO packet is segmented to gso_size later: only a single packet is checked here */
		.tot_len = skb->gso_size ? 0 : bpf_ntohs(ip.tot_len),
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return count(STAT_KERNEL, TC_ACT_OK); /* too big, unreachable, ...: the kernel answers it */
	if (dec_ttl(skb, ip.ttl) < 0)
		return count(STAT_KERNEL, TC_ACT_OK);
	return forward(skb, &fib, rc, bpf_htons(ETH_P_IP));
}

#define IP6_OFF ETH_HLEN
#define HOPS_OFF (IP6_OFF + offsetof(struct ipv6hdr, hop_limit))

static __always_inline int deliver6(struct __sk_buff *skb, struct hr_addr6 *saddr, struct hr_addr6 *daddr,
				    __u8 hop_limit)
{
	struct hr_cidr6 src_key = {.prefixlen = 128}, dst_key = {.prefixlen = 128};

	__builtin_memcpy(src_key.addr, saddr->addr, sizeof(src_key.addr));
	__builtin_memcpy(dst_key.addr, daddr->addr, sizeof(dst_key.addr));
	__u32 *from = bpf_map_lookup_elem(&hr_cluster6, &src_key);
	__u32 *to = bpf_map_lookup_elem(&hr_cluster6, &dst_key);

	if (!from || !to || *to == HR_KERNEL || hop_limit <= 1)
		return TC_ACT_UNSPEC;
	struct hr_endpoint *dst = bpf_map_lookup_elem(&hr_endpoints6, daddr);

	if (!dst || mac_zero(dst->pod_mac))
		return TC_ACT_UNSPEC;
	__u8 hops = hop_limit - 1;

	if (bpf_skb_store_bytes(skb, HOPS_OFF, &hops, 1, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, dst->pod_mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, dst->host_mac, ETH_ALEN, 0) < 0)
		return count(STAT_ERROR, TC_ACT_SHOT);
	return count(STAT_DELIVER, bpf_redirect_peer(dst->ifindex, 0));
}

static __always_inline int route6(struct __sk_buff *skb)
{
	struct ethhdr eth;
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 || bpf_skb_load_bytes(skb, IP6_OFF, &ip6, sizeof(ip6)) < 0)
		return TC_ACT_OK;
	struct hr_addr6 saddr, daddr;

	__builtin_memcpy(saddr.addr, &ip6.saddr, sizeof(saddr.addr));
	__builtin_memcpy(daddr.addr, &ip6.daddr, sizeof(daddr.addr));
	if (from_underlay(skb))
		return deliver6(skb, &saddr, &daddr, ip6.hop_limit);
	struct hr_endpoint *src = bpf_map_lookup_elem(&hr_endpoints6, &saddr);

	if (!src || src->ifindex != skb->ingress_ifindex)
		return count(STAT_KERNEL, TC_ACT_OK); /* link-local, ND, another address: the kernel's */
	if (!mac_eq(src->pod_mac, eth.h_source))
		__builtin_memcpy(src->pod_mac, eth.h_source, ETH_ALEN);
	struct hr_cidr6 key = {.prefixlen = 128};

	__builtin_memcpy(key.addr, daddr.addr, sizeof(key.addr));
	__u32 *where = bpf_map_lookup_elem(&hr_cluster6, &key);

	if (!where || *where == HR_KERNEL || ip6.hop_limit <= 1)
		return count(STAT_KERNEL, TC_ACT_OK);
	__u8 hops = ip6.hop_limit - 1;
	struct hr_endpoint *dst = bpf_map_lookup_elem(&hr_endpoints6, &daddr);

	if (dst) {
		if (mac_zero(dst->pod_mac))
			return count(STAT_KERNEL, TC_ACT_OK);
		if (bpf_skb_store_bytes(skb, HOPS_OFF, &hops, 1, 0) < 0 ||
		    bpf_skb_store_bytes(skb, 0, dst->pod_mac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, dst->host_mac, ETH_ALEN, 0) < 0)
			return count(STAT_KERNEL, TC_ACT_OK);
		return count(STAT_PEER, bpf_redirect_peer(dst->ifindex, 0));
	}
	struct bpf_fib_lookup fib = {
		.family = AF_INET6,
		.l4_protocol = ip6.nexthdr,
		.ifindex = skb->ingress_ifindex,
		.tot_len = skb->gso_size ? 0 : sizeof(ip6) + bpf_ntohs(ip6.payload_len),
	};

	__builtin_memcpy(fib.ipv6_src, saddr.addr, sizeof(fib.ipv6_src));
	__builtin_memcpy(fib.ipv6_dst, daddr.addr, sizeof(fib.ipv6_dst));
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return count(STAT_KERNEL, TC_ACT_OK); /* too big, unreachable, ...: the kernel answers it */
	if (bpf_skb_store_bytes(skb, HOPS_OFF, &hops, 1, 0) < 0)
		return count(STAT_KERNEL, TC_ACT_OK);
	return forward(skb, &fib, rc, bpf_htons(ETH_P_IPV6));
}

SEC("tc")
int host_routing(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return route4(skb);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return route6(skb);
	return from_underlay(skb) ? TC_ACT_UNSPEC : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
