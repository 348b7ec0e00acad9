/* CRC-32 (the IEEE 802.3 polynomial, reflected: the checksum of zlib, PNG and gzip), written here so
 * the runtime library does not depend on zlib. */
#ifndef KN_CRC32_H
#define KN_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) by n bytes: kn_crc32(kn_crc32(0, a, na), b, nb) == crc of a then b.
 * Same convention and values as zlib's crc32(). */
uint32_t kn_crc32(uint32_t crc, const void *data, size_t n);

#endif
