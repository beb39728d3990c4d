/* Reading a classic pcap file's records in place: the index of a stretch of the file
 * (where each frame starts, its length and its time), for the replay loop to walk without a
 * copy per frame. Only what libpcap reads the same way is indexed: a record whose captured
 * length exceeds the file's snapshot length, or one cut short by the end of the data, stops
 * the index and uinet_tap/pcapfile.py hands that stretch to libpcap (which says what is
 * wrong with it, or salvages it as it always did). Every length is checked against the data
 * before it is used. */
#include <stdint.h>
#include <string.h>

#include "_fast.h"

static inline uint32_t rd32(const uint8_t *p, int32_t swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

/* Index records of buf from *pos, at most `max`. Frame i is buf[offsets[i], +lengths[i]) at
 * times[i], offsets counted from where the index began (the batch's first record). Times are
 * seconds as libpcap gives them: a nanosecond file is read at microseconds.
 * On return *pos is the first record not indexed and *stop says why the index ended:
 * UT_PCAP_FULL (max reached, or the end of buf exactly), UT_PCAP_MORE (a record runs past the
 * end of buf), UT_PCAP_BAD (a captured length beyond `snaplen`). */
uint32_t ut_pcap_index(const uint8_t *buf, uint64_t len, uint64_t *pos, int32_t swap,
                       int32_t nsec, uint32_t snaplen, uint32_t max, uint32_t *offsets,
                       uint32_t *lengths, double *times, int32_t *stop) {
    uint64_t p = *pos, start = *pos;
    uint32_t n = 0;
    *stop = UT_PCAP_FULL;
    while (n < max && p < len) {
        if (len - p < 16) {
            *stop = UT_PCAP_MORE;
            break;
        }
        uint32_t sec = rd32(buf + p, swap);
        uint32_t sub = rd32(buf + p + 4, swap);
        uint32_t caplen = rd32(buf + p + 8, swap);
        if (caplen > snaplen) {
            *stop = UT_PCAP_BAD;
            break;
        }
        if (len - p - 16 < caplen) {
            *stop = UT_PCAP_MORE;
            break;
        }
        if (nsec)
            sub /= 1000;
        offsets[n] = (uint32_t)(p + 16 - start);
        lengths[n] = caplen;
        times[n] = sec + sub / 1e6;
        n++;
        p += 16 + (uint64_t)caplen;
    }
    *pos = p;
    return n;
}
