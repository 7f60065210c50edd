// SPDX-License-Identifier: GPL-2.0
/* The outer IPv4/UDP/tunnel header podnet's programs put in front of an Ethernet frame, for
 * both wire formats it speaks (included by geneve.c and hostrouting.c):
 *   Geneve (RFC 8926): version 0, no options, protocol 0x6558 (Ethernet), the VNI in bytes 4-6;
 *   VXLAN (RFC 7348): flags 0x08 (a VNI follows), the VNI in bytes 4-6.
 * Both headers are 8 bytes, so both cost 50 bytes with the inner Ethernet header. The UDP
 * checksum is 0, which both RFCs allow over IPv4. The source port is taken from the flow hash so
 * that the underlay's ECMP spreads flows, as the kernel's tunnels do.
 */
#ifndef PODNET_ENCAP_H
#define PODNET_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define TUN_HDR_LEN 8
#define TUN_OUTER_LEN (sizeof(struct iphdr) + sizeof(struct udphdr) + TUN_HDR_LEN) /* 36 */
#define TUN_ENCAP_LEN (TUN_OUTER_LEN + ETH_HLEN)                                   /* 50 */
#define ETH_P_TEB 0x6558
#define IP_DF 0x4000

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4 /* missing from bookworm's uapi headers */
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

enum tun_wire {
	WIRE_GENEVE = 0,
	WIRE_VXLAN = 1,
};

static __always_inline __u16 tun_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* skb holds an Ethernet frame; its own Ethernet header stays in front as the outer one (the
 * redirect rewrites its addresses), and after it come the outer IPv4/UDP/tunnel headers and
 * ``inner_eth``, then the frame's payload. 0 on success; after a failure past the room
 * adjustment the packet is half-made and must be dropped (-2), before it untouched (-1). */
static __always_inline int tun_encap(struct __sk_buff *skb, const struct ethhdr *inner_eth, __be32 local,
				     __be32 remote, __u32 vni, __u16 port, __u8 wire)
{
	__u32 inner_len = skb->len; /* the inner Ethernet frame */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);

	if (bpf_skb_adjust_room(skb, TUN_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags) < 0)
		return -1;
	struct {
		struct iphdr ip;
		struct udphdr udp;
		__u8 tun[TUN_HDR_LEN];
		struct ethhdr eth;
	} __attribute__((packed)) h = {};

	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tot_len = bpf_htons(TUN_OUTER_LEN + inner_len);
	h.ip.frag_off = bpf_htons(IP_DF);
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = local;
	h.ip.daddr = remote;
	h.ip.check = tun_fold(bpf_csum_diff(0, 0, (__be32 *)&h.ip, sizeof(h.ip), 0));
	h.udp.source = bpf_htons(49152 | (bpf_get_hash_recalc(skb) & 0x3fff));
	h.udp.dest = bpf_htons(port);
	h.udp.len = bpf_htons(sizeof(struct udphdr) + TUN_HDR_LEN + inner_len);
	if (wire == WIRE_VXLAN) {
		h.tun[0] = 0x08;
	} else {
		h.tun[2] = ETH_P_TEB >> 8;
		h.tun[3] = ETH_P_TEB & 0xff;
	}
	h.tun[4] = (vni >> 16) & 0xff;
	h.tun[5] = (vni >> 8) & 0xff;
	h.tun[6] = vni & 0xff;
	h.eth = *inner_eth;

	__be16 proto = bpf_htons(ETH_P_IP);

	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto), 0) < 0)
		return -2;
	return 0;
}

/* the outer headers (``strip`` bytes after the outer Ethernet header, through the inner one) go;
 * the inner packet goes on as if it had arrived as it is. 0 on success, -1 for an inner protocol
 * other than IPv4/IPv6 (untouched), -2 after a failure (drop it). */
static __always_inline int tun_strip(struct __sk_buff *skb, __u32 strip, __be16 inner_proto)
{
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;

	if (inner_proto == bpf_htons(ETH_P_IP))
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
	else if (inner_proto == bpf_htons(ETH_P_IPV6))
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	else
		return -1;
	if (bpf_skb_adjust_room(skb, -(__s32)strip, BPF_ADJ_ROOM_MAC, flags) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &inner_proto, sizeof(inner_proto), 0) < 0)
		return -2;
	return 0;
}

#endif
