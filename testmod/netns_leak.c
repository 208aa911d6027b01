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
 *   dst      an IPv4 output route to 127.0.0.1 in the namespace, kept held
 *   tcpsock  a kernel TCP connection over lo inside the namespace; closed
 *            from this module's pernet .exit hook (leak_pernet_exit), never
 *            kept past the namespace's life (that would be a use-after-free).
 *            The negative test: it must not pin lo.
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
static struct rtable *held_rt; /* mode dst */
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
	if (held_rt) {
		ip_rt_put(held_rt);
		held_rt = NULL;
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

static int take_neigh(struct net_device *lo)
{
	__be32 ip = htonl(0x7f000042); /* 127.0.0.66 */
	struct neighbour *n = __neigh_create(&arp_tbl, &ip, lo, true);

	if (IS_ERR(n))
		return PTR_ERR(n);
	held_neigh = n; /* __neigh_create returns a referenced entry */
	return 0;
}

static int take_dst(struct net *net)
{
	struct flowi4 fl4 = { .daddr = htonl(INADDR_LOOPBACK) };
	struct rtable *rt = ip_route_output_key(net, &fl4);

	if (IS_ERR(rt))
		return PTR_ERR(rt);
	held_rt = rt;
	return 0;
}

static int take_tcpsock(struct net *net)
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
	if (err)
		close_tcp_socks();
	return err;
}

static int __init leak_init(void)
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
		err = take_dst(net);
	} else if (!strcmp(mode, "tcpsock")) {
		err = take_tcpsock(net);
	} else {
		err = -EINVAL;
	}
	if (!err)
		err = register_netdevice_notifier(&leak_nb);
	if (err) {
		leak_release();
		unregister_pernet_subsys(&leak_pernet_ops);
	}
put:
	if (lo)
		dev_put(lo);
	/* Drop the namespace reference now, or the namespace would never die. */
	put_net(net);
	if (err)
		return err;
	pr_info("netns_leak: holding lo of netns %u (mode %s, hold_ms %d)\n",
		target_inum, mode, hold_ms);
	return 0;
}

static void __exit leak_exit(void)
{
	unregister_netdevice_notifier(&leak_nb);
	unregister_pernet_subsys(&leak_pernet_ops);
	cancel_delayed_work_sync(&release_work);
	leak_release();
}

module_init(leak_init);
module_exit(leak_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("netns-trace test module: pins lo of a namespace for a while");
