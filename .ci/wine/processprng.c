/* bcryptprimitives.dll for Wine 8.0, which lacks ProcessPrng: Rust's standard library imports it
 * (since 1.78) for its random numbers, so a Rust .exe does not start under that Wine without it.
 * This one fills the buffer from RtlGenRandom (advapi32's SystemFunction036). Test-only: real
 * Windows ships bcryptprimitives.dll; .ci/windows builds this beside the test binaries. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
