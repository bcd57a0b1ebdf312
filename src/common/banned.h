/*
 * Functions that are banned in pybox: each has a bounded or safer replacement.
 * Every source file of src/ includes it last, after the headers whose inline
 * code may use the real functions.
 */
#ifndef PBX_COMMON_BANNED_H
#define PBX_COMMON_BANNED_H

#define PBX_BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) PBX_BANNED(strcpy)
#undef strcat
#define strcat(x, y) PBX_BANNED(strcat)
#undef sprintf
#define sprintf(...) PBX_BANNED(sprintf)
#undef strtok
#define strtok(x, y) PBX_BANNED(strtok)
#undef atoi
#define atoi(x) PBX_BANNED(atoi)
#undef system
#define system(x) PBX_BANNED(system)
#undef popen
#define popen(x, y) PBX_BANNED(popen)

#endif
