/*
 * Unit tests for media/frame: allocation and payload window, reference
 * counting (also across threads, where a missed atomic would show as a
 * double free or leak under ASan), and the timestamp helpers.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "media/frame.h"

static void test_alloc_fields(void **state)
{
    (void)state;
    struct frame *f = frame_alloc(MEDIA_CODEC_H264, 100);
    assert_non_null(f);
    assert_int_equal(f->codec, MEDIA_CODEC_H264);
    assert_int_equal(f->kind, MEDIA_KIND_VIDEO);
    assert_int_equal(f->size, 100);
    assert_ptr_equal(f->data, frame_payload(f));
    assert_false(f->keyframe);
    assert_false(f->discontinuity);
    assert_int_equal(atomic_load(&f->refs), 1);
    frame_unref(f);

    f = frame_new(MEDIA_CODEC_AAC, "\x21\x10\x04", 3);
    assert_non_null(f);
    assert_int_equal(f->kind, MEDIA_KIND_AUDIO);
    assert_memory_equal(f->data, "\x21\x10\x04", 3);
    frame_unref(f);

    assert_null(frame_alloc(MEDIA_CODEC_H264, (size_t)FRAME_MAX_SIZE + 1));
    f = frame_alloc(MEDIA_CODEC_AV1, 0);
    assert_non_null(f);
    assert_int_equal(f->size, 0);
    frame_unref(f);
    frame_unref(NULL);
}

static void test_trim(void **state)
{
    (void)state;
    /* An FLV AVC video tag: 5 header bytes, then one length-prefixed NAL. */
    static const uint8_t tag[] = {0x17, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x65, 0x88};
    struct frame *f = frame_new(MEDIA_CODEC_H264, tag, sizeof tag);
    assert_non_null(f);
    assert_int_equal(frame_trim(f, 5, sizeof tag - 5), 0);
    assert_int_equal(f->size, 6);
    assert_memory_equal(f->data, tag + 5, 6);
    assert_int_equal(frame_trim(f, 12, 0), -EINVAL);
    assert_int_equal(frame_trim(f, 5, 7), -EINVAL);
    assert_int_equal(frame_trim(f, 11, 0), 0);
    assert_int_equal(frame_trim(f, 0, sizeof tag), 0);
    assert_int_equal(frame_trim(f, 1, SIZE_MAX), -EINVAL);
    frame_unref(f);
}

static void test_refcount(void **state)
{
    (void)state;
    struct frame *f = frame_alloc(MEDIA_CODEC_HEVC, 16);
    assert_ptr_equal(frame_ref(f), f);
    assert_ptr_equal(frame_ref(f), f);
    assert_int_equal(atomic_load(&f->refs), 3);
    frame_unref(f);
    frame_unref(f);
    assert_int_equal(atomic_load(&f->refs), 1);
    frame_unref(f); /* freed: ASan reports a leak or double free otherwise */
}

#define THREADS 4
#define ROUNDS 20000

static void *ref_worker(void *arg)
{
    struct frame *f = arg;
    for (int i = 0; i < ROUNDS; i++) {
        frame_ref(f);
        frame_unref(f);
    }
    frame_unref(f); /* the reference the main thread handed over */
    return NULL;
}

static void test_refcount_threads(void **state)
{
    (void)state;
    struct frame *f = frame_alloc(MEDIA_CODEC_H264, 64);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        frame_ref(f);
        assert_int_equal(pthread_create(&t[i], NULL, ref_worker, f), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&f->refs), 1);
    frame_unref(f);
}

static void test_timestamps(void **state)
{
    (void)state;
    assert_int_equal(media_ts_from_ms(1000), 90000);
    assert_int_equal(media_ts_from_ms(-5), -450);
    assert_int_equal(media_ts_to_ms(90000), 1000);
    assert_int_equal(media_ts_to_ms(89), 0);
    assert_int_equal(media_ts_to_ms(-1), -1);
    assert_int_equal(media_ts_to_ms(-90), -1);
    assert_int_equal(media_ts_to_ms(-91), -2);
    for (int64_t ms = -3000; ms < 3000; ms += 7)
        assert_int_equal(media_ts_to_ms(media_ts_from_ms(ms)), ms);

    /* 90 kHz <-> 48 kHz: one AAC frame is 1920 ticks. */
    assert_int_equal(media_ts_rescale(1920, 90000, 48000), 1024);
    assert_int_equal(media_ts_rescale(1024, 48000, 90000), 1920);
    /* 44.1 kHz: 1024 samples = 2089.795... ticks, rounded to nearest. */
    assert_int_equal(media_ts_rescale(1024, 44100, 90000), 2090);
    assert_int_equal(media_ts_rescale(-1024, 44100, 90000), -2090);
    assert_int_equal(media_ts_rescale(3, 2, 1), 2); /* half rounds away from zero */
    assert_int_equal(media_ts_rescale(-3, 2, 1), -2);
    /* No intermediate overflow. */
    int64_t big = INT64_MAX / 1000;
    assert_int_equal(media_ts_rescale(big, 90000, 90000), big);
    assert_int_equal(media_ts_rescale(INT64_MAX, 1, 2), INT64_MAX);
    assert_int_equal(media_ts_rescale(5, 0, 1), 0);
    assert_int_equal(frame_cts(&(struct frame){.dts = 3000, .pts = 9000}), 6000);
    assert_true(media_ts_to_sec(45000) == 0.5);
}

static void test_codec_names(void **state)
{
    (void)state;
    assert_string_equal(media_codec_name(MEDIA_CODEC_H264), "h264");
    assert_string_equal(media_codec_name(MEDIA_CODEC_HEVC), "hevc");
    assert_string_equal(media_codec_name(MEDIA_CODEC_AV1), "av1");
    assert_string_equal(media_codec_name(MEDIA_CODEC_AAC), "aac");
    assert_string_equal(media_codec_name(MEDIA_CODEC_NONE), "none");
    assert_int_equal(media_codec_kind(MEDIA_CODEC_AV1), MEDIA_KIND_VIDEO);
    assert_int_equal(media_codec_kind(MEDIA_CODEC_AAC), MEDIA_KIND_AUDIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_fields),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_refcount_threads),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_codec_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
