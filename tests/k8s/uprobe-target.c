// A process for the agent suite's uprobe-in-a-container test: it calls
// bpfman_container_target ten times a second, forever. Built static into the test node's
// image (bpfman-k8s-testenv::node), run as a pod's container.
#include <unistd.h>

__attribute__((noinline)) int bpfman_container_target(int x)
{
	return x + 1;
}

int main(void)
{
	volatile int s = 0;
	for (;;) {
		s = bpfman_container_target(s);
		usleep(100000);
	}
}
