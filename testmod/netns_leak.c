// SPDX-License-Identifier: GPL-2.0
/*
 * netns_leak: reproduce a stuck network-namespace teardown on purpose.
 *
 * Takes a reference that pins the loopback device of the namespace of
 * process `pid`, and drops it `hold_ms` milliseconds after the kernel starts
 * unregistering lo. In between, the kernel loops in netdev_run_todo printing
 * "unregister_netdevice: waiting for lo to become free. Usage count = N":
 * exactly what netns-trace must observe and attribute.
 *
 * Modes (each a different kind of holder, all safe to keep past teardown):
 *   hold     a bare dev_hold on lo (dev_get_by_name)
 *   neigh    a neighbour entry on lo (arp_tbl, 127.0.0.66), kept referenced
 *   dst      a dst on lo from this module's own dst_ops, kept referenced.
 *            Not a route: the kernel's dsts sit on lists (rt_uncached_list,
 *            FIB nexthop caches) that unregister flushes, and since 5.3
 *            dst_dev_put moves them onto blackhole_netdev, so a held route
 *            never pins lo. A dst no kernel list knows keeps its dev_hold
 *            until dst_release, like a dst leaked by a buggy subsystem.
 *   tcpsock  a kernel TCP connection over lo inside the namespace; closed
 *            from this module's pernet .exit hook (leak_pernet_exit), never
 *            kept past the namespace's life (that would be a use-after-free).
 *            The negative test: it must not pin lo. Prints both
 *            connected 4-tuples so the host can find their socket events.
 *
 * The take_* helpers are noinline and outside __init on purpose: the kernel
 * stack a tracer records at the holder's creation then names a frame of
 * this module that still resolves in /proc/kallsyms after init returns.
 */
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/workqueue.h>
#include <linux/ktime.h>
#include <linux/pid_namespace.h>
#include <net/net_namespace.h>
#include <net/neighbour.h>
#include <net/arp.h>
#include <net/route.h>
#include <linux/net.h>
#include <linux/in.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <net/dst.h>
#include <net/dst_ops.h>

static int pid;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "process whose network namespace is targeted (required)");
static char *mode = "hold";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "hold | neigh | dst | tcpsock");
static int hold_ms = 3000;
module_param(hold_ms, int, 0444);
MODULE_PARM_DESC(hold_ms, "ms to keep the reference after lo starts unregistering");

/* The device whose unregistration we wait for (pointer compare only, except
 * in hold mode where we own a reference on it). */
static struct net_device *target_dev;
static unsigned int target_inum;

/* What we hold; exactly one is set, cleared by leak_release(). */
static struct net_device *held_dev; /* mode hold */
static struct neighbour *held_neigh; /* mode neigh */
static struct dst_entry *held_dst; /* mode dst */
/* mode tcpsock: listener, client, accepted; and their namespace (compared
 * only, never dereferenced, in the pernet exit hook). */
static struct socket *tcp_socks[3];
static struct net *tcp_net;

static DEFINE_MUTEX(leak_lock); /* serialises release: work vs module exit */
static bool release_scheduled; /* set under rtnl by the notifier, once */
static ktime_t unregister_start;

static void close_tcp_socks(void)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(tcp_socks); i++) {
		if (tcp_socks[i])
			sock_release(tcp_socks[i]);
		tcp_socks[i] = NULL;
	}
	tcp_net = NULL;
}

static void leak_release(void)
{
	mutex_lock(&leak_lock);
	if (held_dev) {
		dev_put(held_dev);
		held_dev = NULL;
	}
	if (held_neigh) {
		neigh_release(held_neigh);
		held_neigh = NULL;
	}
	if (held_dst) {
		dst_release(held_dst); /* last ref: freed after an RCU grace period */
		held_dst = NULL;
	}
	close_tcp_socks(); /* only on init failure: normally the pernet exit did it */
	mutex_unlock(&leak_lock);
}

static void release_fn(struct work_struct *w)
{
	leak_release();
	pr_info("netns_leak: released lo after %lld ms\n",
		ktime_ms_delta(ktime_get(), unregister_start));
}
static DECLARE_DELAYED_WORK(release_work, release_fn);

/* The kernel re-sends NETDEV_UNREGISTER every second while it waits for the
 * refcount to drop, so only the first one schedules the release. */
static int leak_netdev_event(struct notifier_block *nb, unsigned long event,
			     void *ptr)
{
	struct net_device *dev = netdev_notifier_info_to_dev(ptr);

	if (event != NETDEV_UNREGISTER || dev != target_dev || release_scheduled)
		return NOTIFY_DONE;
	release_scheduled = true;
	unregister_start = ktime_get();
	schedule_delayed_work(&release_work, msecs_to_jiffies(hold_ms));
	return NOTIFY_DONE;
}

static struct notifier_block leak_nb = { .notifier_call = leak_netdev_event };

/* Writing 1 to /sys/module/netns_leak/parameters/release_now lets go at
 * once (if lo is already unregistering): a test can release only after the
 * tracer reported what it must see first, instead of racing a timer. */
static int release_now_set(const char *val, const struct kernel_param *kp)
{
	bool now;
	int err = kstrtobool(val, &now);

	if (err)
		return err;
	if (now && READ_ONCE(release_scheduled))
		mod_delayed_work(system_wq, &release_work, 0);
	return 0;
}
static const struct kernel_param_ops release_now_ops = { .set = release_now_set };
module_param_cb(release_now, &release_now_ops, NULL, 0200);
MODULE_PARM_DESC(release_now, "write 1: release now (lo must be unregistering)");

/* Pernet hook: closes the tcpsock sockets when their namespace dies, as real
 * kernel socket users do. cleanup_net runs every .exit before the
 * exit_batch that unregisters the devices; unregister_pernet_subsys (rmmod)
 * also calls it for every live namespace. */
static void __net_exit leak_pernet_exit(struct net *net)
{
	mutex_lock(&leak_lock);
	if (net == tcp_net) {
		close_tcp_socks();
		pr_info("netns_leak: closed tcp sockets of netns %u\n", net->ns.inum);
	}
	mutex_unlock(&leak_lock);
}

static struct pernet_operations leak_pernet_ops = { .exit = leak_pernet_exit };

static noinline int take_neigh(struct net_device *lo)
{
	__be32 ip = htonl(0x7f000042); /* 127.0.0.66 */
	struct neighbour *n = __neigh_create(&arp_tbl, &ip, lo, true);

	if (IS_ERR(n))
		return PTR_ERR(n);
	held_neigh = n; /* __neigh_create returns a referenced entry */
	return 0;
}

/* mode dst: our own dst family, so no kernel list (and no rt_flush_dev,
 * no dst_dev_put) ever sees our dst. AF_INET so tracers that look at
 * ops->family see a plausible IPv4 dst; the cache is sized for a struct
 * rtable for the same reason. Torn down in leak_exit, after rcu_barrier. */
static struct dst_ops leak_dst_ops = { .family = AF_INET };
static bool leak_dst_ops_ready; /* dst_entries_init done */

static void dst_ops_destroy(void)
{
	/* dst_release frees through call_rcu (dst_destroy_rcu uses the ops and
	 * the cache): wait for every pending callback first. */
	rcu_barrier();
	if (leak_dst_ops_ready)
		dst_entries_destroy(&leak_dst_ops);
	leak_dst_ops_ready = false;
	kmem_cache_destroy(leak_dst_ops.kmem_cachep); /* NULL is fine */
	leak_dst_ops.kmem_cachep = NULL;
}

static noinline int take_dst(struct net_device *lo)
{
	struct dst_entry *dst;
	int err;

	leak_dst_ops.kmem_cachep = kmem_cache_create("netns_leak_dst",
						     sizeof(struct rtable), 0,
						     SLAB_HWCACHE_ALIGN, NULL);
	if (!leak_dst_ops.kmem_cachep)
		return -ENOMEM;
	err = dst_entries_init(&leak_dst_ops);
	if (err)
		return err;
	leak_dst_ops_ready = true;
	/* dst_init takes the reference on lo (netdev_hold). 6.7 dropped the
	 * initial_ref argument (it was always 1). */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0)
	dst = dst_alloc(&leak_dst_ops, lo, 1, DST_OBSOLETE_NONE, 0);
#else
	dst = dst_alloc(&leak_dst_ops, lo, DST_OBSOLETE_NONE, 0);
#endif
	if (!dst)
		return -ENOMEM;
	/* dst_init sets only the dst_entry; zero the rest of the rtable. */
	memset(dst + 1, 0, sizeof(struct rtable) - sizeof(*dst));
	held_dst = dst;
	return 0;
}

/* "netns_leak: tcpsock 127.0.0.1:SPORT -> 127.0.0.1:DPORT" (local -> peer). */
static void print_tuple(struct socket *sock)
{
	struct sockaddr_in l = {}, p = {};

	if (kernel_getsockname(sock, (struct sockaddr *)&l) < 0 ||
	    kernel_getpeername(sock, (struct sockaddr *)&p) < 0)
		return;
	pr_info("netns_leak: tcpsock %pI4:%u -> %pI4:%u\n", &l.sin_addr.s_addr,
		ntohs(l.sin_port), &p.sin_addr.s_addr, ntohs(p.sin_port));
}

static noinline int take_tcpsock(struct net *net)
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int err;

	tcp_net = net;
	err = sock_create_kern(net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &tcp_socks[0]);
	if (!err)
		err = kernel_bind(tcp_socks[0], (struct sockaddr *)&addr, sizeof(addr));
	if (!err)
		err = kernel_listen(tcp_socks[0], 1);
	if (!err) /* learn the port: returns the address length on success */
		err = min(kernel_getsockname(tcp_socks[0], (struct sockaddr *)&addr), 0);
	if (!err)
		err = sock_create_kern(net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &tcp_socks[1]);
	if (!err)
		err = kernel_connect(tcp_socks[1], (struct sockaddr *)&addr, sizeof(addr), 0);
	if (!err)
		err = kernel_accept(tcp_socks[0], &tcp_socks[2], 0);
	if (err) {
		close_tcp_socks();
		return err;
	}
	print_tuple(tcp_socks[1]); /* client */
	print_tuple(tcp_socks[2]); /* accepted */
	return 0;
}

static int __init netns_leak_init(void)
{
	struct net_device *lo;
	struct net *net;
	int err;

	if (pid <= 0)
		return -EINVAL;
	net = get_net_ns_by_pid(pid);
	if (IS_ERR(net))
		return PTR_ERR(net);
	lo = dev_get_by_name(net, "lo");
	if (!lo) {
		put_net(net);
		return -ENODEV;
	}
	target_dev = lo;
	target_inum = net->ns.inum;

	/* Registered while we still hold the namespace, so its .exit is
	 * guaranteed to run for it (tcpsock relies on that). */
	err = register_pernet_subsys(&leak_pernet_ops);
	if (err)
		goto put;
	if (!strcmp(mode, "hold")) {
		held_dev = lo; /* keep dev_get_by_name's reference */
		lo = NULL;
	} else if (!strcmp(mode, "neigh")) {
		err = take_neigh(lo);
	} else if (!strcmp(mode, "dst")) {
		err = take_dst(lo);
	} else if (!strcmp(mode, "tcpsock")) {
		err = take_tcpsock(net);
	} else {
		err = -EINVAL;
	}
	if (!err)
		err = register_netdevice_notifier(&leak_nb);
	if (err) {
		leak_release();
		dst_ops_destroy();
		unregister_pernet_subsys(&leak_pernet_ops);
	}
put:
	if (lo)
		dev_put(lo);
	/* Drop the namespace reference now, or the namespace would never die. */
	put_net(net);
	if (err)
		return err;
	/* tcpsock holds nothing on lo: say so, the log is read by people. */
	pr_info("netns_leak: %s lo of netns %u (mode %s, hold_ms %d)\n",
		strcmp(mode, "tcpsock") ? "holding" : "not holding", target_inum,
		mode, hold_ms);
	return 0;
}

static void __exit netns_leak_exit(void)
{
	unregister_netdevice_notifier(&leak_nb);
	unregister_pernet_subsys(&leak_pernet_ops);
	cancel_delayed_work_sync(&release_work);
	leak_release();
	dst_ops_destroy();
}

module_init(netns_leak_init);
module_exit(netns_leak_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("netns-trace test module: pins lo of a namespace for a while");
