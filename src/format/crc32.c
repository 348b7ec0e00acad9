#include "format/crc32.h"

#include <pthread.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kn_crc32 reads 8 bytes at a time as little-endian words"
#endif

/* Slicing-by-8: table[k][b] is the CRC of byte b followed by k zero bytes, so eight input bytes fold
 * into the CRC with eight lookups instead of eight dependent steps. This keeps checksumming the weights
 * of a large model well below the time it takes to read them. */
static uint32_t kn_crc_table[8][256];
static pthread_once_t kn_crc_once = PTHREAD_ONCE_INIT;

static void kn_crc_build_tables(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int bit = 0; bit < 8; bit++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        kn_crc_table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++) {
            uint32_t prev = kn_crc_table[k - 1][b];
            kn_crc_table[k][b] = (prev >> 8) ^ kn_crc_table[0][prev & 0xff];
        }
}

uint32_t kn_crc32(uint32_t crc, const void *data, size_t n) {
    pthread_once(&kn_crc_once, kn_crc_build_tables);
    const uint32_t (*t)[256] = kn_crc_table;
    const unsigned char *p = data;
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    }
    for (; n > 0; p++, n--)
        crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
    return ~crc;
}
