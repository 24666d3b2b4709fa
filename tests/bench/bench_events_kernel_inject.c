// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Flow injector of tests/bench/bench_events_kernel.py (compiled by it at run
 * time with `cc -O2`; no libbpf needed).
 *
 * Runs the daemon's own pinned tc egress program (<pin_root>/prog_egress_v1)
 * with BPF_PROG_TEST_RUN on synthetic packets: no packet is transmitted, the
 * program just judges them as if they left the interface. Each packet is a
 * TCP SYN carrying plaintext data (TCP Fast Open style) of a NEW flow (its
 * own source port / destination address), so the classifier creates the
 * flow, judges its first bytes "not TLS" and emits one ring-buffer event per
 * packet, exactly as for a real plaintext connection.
 *
 *   bench_events_kernel_inject PIN_PATH RATE SECONDS FIRST_INDEX DPORT
 *
 * Paces RATE packets per second (in 1 ms steps) for SECONDS, flows numbered
 * from FIRST_INDEX. Prints one line:
 *   injected N seconds S rate R retval_counts unspec=U shot=D errors=E cpu C
 * (C = this process's user+system CPU seconds, which include running the
 * BPF program)
 * Addresses: source 198.18.0.1, destinations 198.18.128.0/17 (the bench
 * policy's boundary), only in this synthetic packet; nothing is sent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint16_t csum16(const void *data, size_t len, uint32_t sum)
{
	const uint8_t *p = data;

	for (; len > 1; len -= 2, p += 2)
		sum += (uint32_t)(p[0] << 8 | p[1]);
	if (len)
		sum += (uint32_t)(p[0] << 8);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

#define PAYLOAD "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

struct pkt {
	uint8_t eth[14];
	uint8_t ip[20];
	uint8_t tcp[20];
	char payload[sizeof(PAYLOAD) - 1];
} __attribute__((packed));

static void build(struct pkt *p, uint64_t i, uint16_t dport)
{
	/* 64000 source ports x 32000 destinations: unique 5-tuples. */
	const uint16_t sport = (uint16_t)(1024 + i % 64000);
	const uint32_t dst = 0xc6128000u /* 198.18.128.0 */ + 1 + (uint32_t)((i / 64000) % 32000);
	const uint32_t src = 0xc6120001u; /* 198.18.0.1 */
	uint8_t *ip = p->ip, *tcp = p->tcp;
	uint16_t tot = (uint16_t)(sizeof(p->ip) + sizeof(p->tcp) + sizeof(p->payload));

	memset(p, 0, sizeof(*p));
	memcpy(p->eth, "\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00", 14);
	ip[0] = 0x45;
	ip[2] = (uint8_t)(tot >> 8);
	ip[3] = (uint8_t)tot;
	ip[4] = (uint8_t)(i >> 8);
	ip[5] = (uint8_t)i;
	ip[6] = 0x40; /* DF */
	ip[8] = 64;
	ip[9] = 6; /* TCP */
	*(uint32_t *)(ip + 12) = htonl(src);
	*(uint32_t *)(ip + 16) = htonl(dst);
	*(uint16_t *)(ip + 10) = htons(csum16(ip, 20, 0));
	*(uint16_t *)(tcp + 0) = htons(sport);
	*(uint16_t *)(tcp + 2) = htons(dport);
	*(uint32_t *)(tcp + 4) = htonl((uint32_t)(0x10000000u + i * 7919u)); /* ISN */
	tcp[12] = 5 << 4;
	tcp[13] = 0x02; /* SYN (with data: TFO style) */
	*(uint16_t *)(tcp + 14) = htons(64240);
	memcpy(p->payload, PAYLOAD, sizeof(p->payload));
	/* TCP checksum over the pseudo header (the classifier does not check
	 * it, but keep the packet honest). */
	{
		uint8_t ph[12];
		uint32_t sum = 0;
		const uint8_t *q;
		size_t n, k;
		uint16_t tl = (uint16_t)(sizeof(p->tcp) + sizeof(p->payload));

		memcpy(ph, ip + 12, 8);
		ph[8] = 0;
		ph[9] = 6;
		ph[10] = (uint8_t)(tl >> 8);
		ph[11] = (uint8_t)tl;
		for (k = 0; k < 12; k += 2)
			sum += (uint32_t)(ph[k] << 8 | ph[k + 1]);
		q = tcp;
		n = tl;
		for (; n > 1; n -= 2, q += 2)
			sum += (uint32_t)(q[0] << 8 | q[1]);
		if (n)
			sum += (uint32_t)(q[0] << 8);
		while (sum >> 16)
			sum = (sum & 0xffff) + (sum >> 16);
		*(uint16_t *)(tcp + 16) = htons((uint16_t)~sum);
	}
}

int main(int argc, char **argv)
{
	union bpf_attr a;
	struct pkt p;
	int prog_fd;
	double rate, secs, t0, t_end, t;
	uint64_t first, i, n = 0, due, unspec = 0, shot = 0, errors = 0;
	int dport;

	if (argc != 6) {
		fprintf(stderr, "usage: %s PIN_PATH RATE SECONDS FIRST_INDEX DPORT\n", argv[0]);
		return 2;
	}
	rate = atof(argv[2]);
	secs = atof(argv[3]);
	first = strtoull(argv[4], NULL, 10);
	dport = atoi(argv[5]);
	if (rate <= 0 || rate > 5e6 || secs <= 0 || secs > 60 || dport <= 0 || dport > 65535) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}

	memset(&a, 0, sizeof(a));
	a.pathname = (uint64_t)(uintptr_t)argv[1];
	prog_fd = sys_bpf(BPF_OBJ_GET, &a);
	if (prog_fd < 0) {
		fprintf(stderr, "BPF_OBJ_GET %s: %s\n", argv[1], strerror(errno));
		return 1;
	}

	t0 = now_s();
	t_end = t0 + secs;
	i = first;
	for (;;) {
		t = now_s();
		if (t >= t_end)
			break;
		due = (uint64_t)((t - t0) * rate) + 1;
		if (n >= due) {
			/* Ahead of the schedule: sleep to the next millisecond. */
			struct timespec ts = {0, 200000};

			nanosleep(&ts, NULL);
			continue;
		}
		while (n < due) {
			build(&p, i, (uint16_t)dport);
			memset(&a, 0, sizeof(a));
			a.test.prog_fd = (uint32_t)prog_fd;
			a.test.data_in = (uint64_t)(uintptr_t)&p;
			a.test.data_size_in = sizeof(p);
			a.test.repeat = 1;
			if (sys_bpf(BPF_PROG_TEST_RUN, &a) != 0) {
				if (++errors == 1)
					fprintf(stderr, "BPF_PROG_TEST_RUN: %s\n", strerror(errno));
				if (errors > 100)
					goto out;
			} else if (a.test.retval == 2 /* TC_ACT_SHOT */) {
				shot++;
			} else {
				unspec++;
			}
			i++;
			n++;
		}
	}
out:
	t = now_s() - t0;
	{
		struct rusage ru;
		double cpu = 0;

		if (getrusage(RUSAGE_SELF, &ru) == 0)
			cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		printf("injected %llu seconds %.4f rate %.1f retval_counts unspec=%llu shot=%llu "
		       "errors=%llu cpu %.3f\n",
		       (unsigned long long)n, t, (double)n / t, (unsigned long long)unspec,
		       (unsigned long long)shot, (unsigned long long)errors, cpu);
	}
	close(prog_fd);
	return errors ? 1 : 0;
}
