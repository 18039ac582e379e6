/*
 * LD_PRELOAD shim for the differential test (tests/interop/keepalived_ref.py).
 *
 * This kernel has no IPVS module, so keepalived's checker process stops at
 * "IPVS: Can't initialize ipvs" before it dumps its configuration (-d). The
 * shim makes the libnl generic-netlink calls keepalived uses for IPVS succeed
 * without touching the kernel: the "IPVS" family resolves to a made-up id,
 * every message is "sent", and every receive reports the ACK/FINISH callbacks
 * the caller registered. Nothing else in keepalived goes through libnl-genl,
 * so VRRP netlink (raw sockets) is unaffected. Written for hakeeper; not
 * derived from keepalived or libnl sources.
 */
/* No headers and no libc: builds with `gcc -shared -fPIC -nostdlib` alone. */
struct nl_sock;
struct nl_msg;
typedef int (*hk_cb_fn)(struct nl_msg *, void *);

enum { HK_CB_FINISH = 1, HK_CB_ACK = 4, HK_CB_SLOTS = 16 };

static hk_cb_fn saved_fn[HK_CB_SLOTS];
static void *saved_arg[HK_CB_SLOTS];

static int hk_is_ipvs(const char *name)
{
	return name && name[0] == 'I' && name[1] == 'P' && name[2] == 'V' && name[3] == 'S' &&
	       name[4] == '\0';
}

int genl_ctrl_resolve(struct nl_sock *sk, const char *name)
{
	(void)sk;
	return hk_is_ipvs(name) ? 0x7ff0 : -1;
}

int genl_connect(struct nl_sock *sk)
{
	(void)sk;
	return 0;
}

int nl_send_auto(struct nl_sock *sk, struct nl_msg *msg)
{
	(void)sk;
	(void)msg;
	return 0;
}

int nl_socket_modify_cb(struct nl_sock *sk, int type, int kind, hk_cb_fn fn, void *arg)
{
	(void)sk;
	(void)kind;
	if (type >= 0 && type < HK_CB_SLOTS) {
		saved_fn[type] = fn;
		saved_arg[type] = arg;
	}
	return 0;
}

int nl_socket_modify_err_cb(struct nl_sock *sk, int kind, void *fn, void *arg)
{
	(void)sk;
	(void)kind;
	(void)fn;
	(void)arg;
	return 0;
}

int nl_recvmsgs_default(struct nl_sock *sk)
{
	(void)sk;
	if (saved_fn[HK_CB_ACK])
		saved_fn[HK_CB_ACK]((struct nl_msg *)0, saved_arg[HK_CB_ACK]);
	if (saved_fn[HK_CB_FINISH])
		saved_fn[HK_CB_FINISH]((struct nl_msg *)0, saved_arg[HK_CB_FINISH]);
	return 0;
}
