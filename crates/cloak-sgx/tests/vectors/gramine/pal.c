/* The PAL the Gramine known-answer vectors were measured with: not Gramine's libpal.so (that
 * needs a full Gramine build), but a real position-independent ELF with the same shape: several
 * PT_LOAD segments (headers R, code R+X, read-only data R, data R+W whose bss runs over several
 * pages past a page-unaligned start) and non-LOAD program headers (GNU_STACK, GNU_RELRO, DYNAMIC)
 * that the signer must ignore. It is never run. Build command: see README.md. */

static const char banner[] = "cloak known-answer PAL: read-only data";
volatile unsigned long counter __attribute__((aligned(0x4000))) = 0x1122334455667788ul;
char bss[3 * 4096 + 123];
static const unsigned long table[512] = {1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144};

unsigned long step(unsigned long x) {
    for (unsigned i = 0; i < sizeof bss; i++)
        bss[i] = (char)(x + i);
    return x * 6364136223846793005ul + table[x % 512] + (unsigned char)banner[x % sizeof banner];
}

void _start(void) {
    for (;;)
        counter = step(counter);
}
