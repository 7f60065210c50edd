// SPDX-License-Identifier: GPL-2.0
/* A tc program that drops every IPv4 UDP packet: a loss the kernel counts nowhere (no nft rule,
 * no SNMP counter, no interface counter), for the "inconclusive" verdict of podnet diagnose. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int drop_udp(struct __sk_buff *skb)
{
	__u8 proto;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) < 0)
		return TC_ACT_OK;
	return proto == IPPROTO_UDP ? TC_ACT_SHOT : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
